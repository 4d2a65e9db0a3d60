"""Trajectories over training: lines per block (fig. 1), the block × step heatmap (fig. 2), and
the twin against Pythia by fraction of training and by tokens seen (fig. 5).

Only measured values are drawn; a schedule step without a usable row is a gap
(the line breaks, the heatmap cell is grey), never an interpolation.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

from .. import verdicts
from .context import (
    ARM_LABELS,
    SUPERSCRIPT,
    Drawn,
    FigureContext,
    depth_colourbar,
    depth_colours,
    on_grid,
    save,
    seeds_mean,
    step_axis,
)


def expected_steps(traj: pl.DataFrame, ctx: FigureContext, arm: str) -> list[int]:
    """The arm's scheduled steps together with every measured step, sorted."""
    return sorted(set(ctx.expected.get(arm, ())) | set(traj["step"].to_list()))


def lines_by_block(frame: pl.DataFrame, ctx: FigureContext, out: Path, arm: str) -> Drawn:
    """Fig. 1: the metric against training step, one line per block coloured by depth."""
    traj = verdicts.trajectory(frame, arm, ctx.metric)
    steps = expected_steps(traj, ctx, arm)
    grid = on_grid(traj, steps)
    colour, mappable = depth_colours(traj["block"].unique().to_list())
    fig, ax = plt.subplots(figsize=(10, 6), layout="constrained")
    for (block,), g in grid.group_by("block", maintain_order=True):
        ax.plot(
            g["step"].to_numpy(),
            g["value"].to_numpy(allow_copy=True).astype(float),
            color=colour(block),
            lw=1.3,
            marker=".",
            ms=3,
        )
    missing = sorted(set(steps) - set(traj["step"].to_list()))
    if missing:
        ax.plot(
            missing,
            np.zeros(len(missing)),
            "x",
            color="0.4",
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label=f"step with no usable rows ({len(missing)}): a gap, not interpolated",
        )
        fig.legend(loc="outside lower left", frameon=False)
    step_axis(ax, steps[-1] if steps else 1, log_until=ctx.log_until)
    ax.set_ylabel(
        ctx.metric_label + seeds_mean(frame, arm).replace(", ", " (", 1) + (")" if seeds_mean(frame, arm) else "")
    )
    ax.grid(alpha=0.3)
    depth_colourbar(fig, mappable, ax, traj["block"].max() + 1 if len(traj) else 1)
    fig.suptitle(
        ctx.title(f"FFN linearity across training, {ARM_LABELS.get(arm, arm)}{seeds_mean(frame, arm)}"), fontsize=11
    )
    return Drawn(
        "lines_by_block",
        save(fig, out, "lines_by_block"),
        {"lines": traj, "missing_steps": pl.DataFrame({"step": pl.Series(missing, dtype=pl.Int64)})},
    )


def heatmap(frame: pl.DataFrame, ctx: FigureContext, out: Path, arm: str) -> Drawn:
    """Fig. 2: block × step heatmap of the metric; columns are schedule steps in order (not to scale)."""
    traj = verdicts.trajectory(frame, arm, ctx.metric)
    steps = expected_steps(traj, ctx, arm)
    n_blocks = traj["block"].max() + 1 if len(traj) else 1
    matrix = np.full((n_blocks, len(steps)), np.nan)
    col = {s: i for i, s in enumerate(steps)}
    for b, s, v in traj.select("block", "step", "value").iter_rows():
        matrix[b, col[s]] = v
    fig, ax = plt.subplots(figsize=(12, 5.5), layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap=cmap, origin="lower", interpolation="nearest")
    ticks = _column_ticks(steps)
    ax.set_xticks(ticks, [str(steps[i]) for i in ticks], rotation=45, ha="right")
    ax.set_yticks(range(n_blocks))
    ax.set_xlabel("training step (one column per scheduled checkpoint; spacing not to scale)")
    ax.set_ylabel("block (depth: 0 = first FFN)")
    fig.colorbar(im, ax=ax, pad=0.01).set_label(ctx.metric_label + seeds_mean(frame, arm))
    if np.isnan(matrix).any():
        ax.legend(
            handles=[Patch(color="0.85", label="no usable row")],
            loc="upper left",
            bbox_to_anchor=(0, -0.22),
            frameon=False,
        )
    fig.suptitle(
        ctx.title(f"FFN linearity, block × step, {ARM_LABELS.get(arm, arm)}{seeds_mean(frame, arm)}"), fontsize=11
    )
    return Drawn("heatmap", save(fig, out, "heatmap"), {"cells": traj})


def _column_ticks(steps: list[int], n: int = 16) -> list[int]:
    """About ``n`` column indices to label, always including the first and last."""
    if len(steps) <= n:
        return list(range(len(steps)))
    picks = set(np.linspace(0, len(steps) - 1, n).round().astype(int).tolist())
    return sorted(picks | {0, len(steps) - 1})


def training_fraction(frame: pl.DataFrame, ctx: FigureContext, arms: list[str]) -> pl.DataFrame:
    """Each arm's trajectory with ``fraction = step / total steps of that arm``.

    Both Pythia and the twin train on a constant number of tokens per step, so the
    step fraction equals the fraction of training tokens seen.  The total is the
    manifest's (schedule end; twin steps) or, failing that, the last stored step.
    """
    parts = []
    for arm in arms:
        traj = verdicts.trajectory(frame, arm, ctx.metric)
        total = ctx.totals.get(arm) or traj["step"].max() or 1
        parts.append(traj.with_columns(arm=pl.lit(arm), fraction=pl.col("step") / total))
    return pl.concat(parts) if parts else pl.DataFrame()


def twin_vs_pythia(frame: pl.DataFrame, ctx: FigureContext, out: Path) -> Drawn:
    """Fig. 5: the twin against the checkpoint arm (hub, else local) on two x-axes, fraction of training
    (left) and tokens seen (right); colour = depth, line style = arm.

    Drawn only when both arms have usable rows; otherwise nothing is written and ``skipped`` says why.
    A step with no usable row breaks the line on both axes (its tokens are unknown too).
    """
    arms = verdicts.trained_arms(frame, ctx.metric)
    reference = next((a for a in arms if a in ("hub", "local")), None)
    if reference is None or "twin" not in arms:
        lacking = [
            what
            for what, ok in (("a checkpoint arm (hub or local)", reference), ("the twin", "twin" in arms))
            if not ok
        ]
        return Drawn(
            "twin_vs_pythia",
            (),
            skipped=f"it needs usable rows of the twin and of a checkpoint arm; the store has none of "
            f"{' or '.join(lacking)} (trained arms with usable rows: {', '.join(arms) or 'none'})",
        )
    drawn = training_fraction(frame, ctx, [reference, "twin"])
    colour, mappable = depth_colours(drawn["block"].unique().to_list())
    styles = {reference: "-", "twin": "--"}
    fig, (by_fraction, by_tokens) = plt.subplots(1, 2, figsize=(14, 6), sharey=True, layout="constrained")
    for arm in styles:
        part = drawn.filter(pl.col("arm") == arm)
        grid = on_grid(part, expected_steps(part, ctx, arm)).join(
            part.select("block", "step", "tokens_seen"), on=["block", "step"], how="left"
        )
        grid = grid.with_columns(fraction=pl.col("step") / (ctx.totals.get(arm) or part["step"].max() or 1))
        for (block,), g in grid.group_by("block", maintain_order=True):
            value = g["value"].cast(pl.Float64).fill_null(float("nan"))
            by_fraction.plot(g["fraction"], value, styles[arm], color=colour(block), lw=1.2)
            by_tokens.plot(
                g["tokens_seen"].cast(pl.Float64).fill_null(float("nan")),
                value,
                styles[arm],
                color=colour(block),
                lw=1.2,
            )
    handles = [plt.Line2D([], [], color="k", ls=styles[a], label=ARM_LABELS[a]) for a in styles]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fraction_axis(by_fraction, drawn.filter(pl.col("fraction") > 0)["fraction"].min())
    by_fraction.set_xlabel("fraction of training (step / final step = tokens seen / total tokens; symlog)")
    by_fraction.set_ylabel(ctx.metric_label)
    tokens_axis(by_tokens, drawn, list(styles))
    for ax in (by_fraction, by_tokens):
        ax.grid(alpha=0.3)
    depth_colourbar(fig, mappable, [by_fraction, by_tokens], drawn["block"].max() + 1)
    fig.suptitle(ctx.title("Twin vs Pythia, by fraction of training and by tokens seen"), fontsize=11)
    return Drawn("twin_vs_pythia", save(fig, out, "twin_vs_pythia"), {"lines": drawn})


def tokens_axis(ax, drawn: pl.DataFrame, arms: list[str]) -> None:
    """Symlog tokens axis from 0 to the largest stored count; names the arms whose rows store no tokens."""
    known = drawn.filter(pl.col("tokens_seen").is_not_null())
    unknown = [a for a in arms if known.filter(pl.col("arm") == a).is_empty()]
    if unknown:
        ax.text(
            0.02,
            0.02,
            "tokens seen not stored for: "
            + ", ".join(ARM_LABELS.get(a, a) for a in unknown)
            + "\n(give the manifest [schedule] tokens_per_step)",
            transform=ax.transAxes,
            fontsize=9,
            va="bottom",
        )
    positive = known.filter(pl.col("tokens_seen") > 0)["tokens_seen"]
    low, high = (float(positive.min()), float(positive.max())) if len(positive) else (1.0, 10.0)
    ax.set_xscale("symlog", linthresh=low, linscale=0.6)
    ax.set_xlim(0, high * 1.5)
    decades = range(math.ceil(math.log10(low)), math.floor(math.log10(high)) + 1)
    ax.set_xticks([0.0] + [10.0**k for k in decades], ["0"] + [f"10{str(k).translate(SUPERSCRIPT)}" for k in decades])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("training tokens seen (symlog: linear below the first measured count)")


def fraction_axis(ax, smallest: float | None) -> None:
    """Symlog in [0, 1], linear below the smallest positive fraction, ticks at 0 and each decade."""
    linthresh = float(smallest) if smallest else 1e-3
    ax.set_xscale("symlog", linthresh=linthresh, linscale=0.6)
    ax.set_xlim(0, 1.05)
    decades = range(math.ceil(math.log10(linthresh)), 1)
    ax.set_xticks([0.0] + [10.0**k for k in decades], ["0"] + [f"10{str(k).translate(SUPERSCRIPT)}" for k in decades])
    ax.xaxis.set_minor_locator(NullLocator())
