"""Trained against untrained: per-block small multiples over the random-init band (fig. 3) and
the final-step profile against the band and a published reference (fig. 4).

The band is the random-init prediction band for one new draw, ``mean ± t·sd·√(1 + 1/S)`` over the ``S``
seeds at the manifest's coverage (:func:`trajectory.verdicts.band.random_init_band`).  Each trained seed is its
own line; a panel marks the persistent exit of the verdict's arm only where it holds
(:mod:`trajectory.verdicts`), so a value that has not stayed outside long enough carries no marker.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import polars as pl

from .. import verdicts
from ..config import is_twin
from .context import ARM_LABELS, Drawn, FigureContext, arm_colour, on_grid, save, seed_style, step_axis, step_label


def trained_on_pythia_axis(frame: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Every trained arm's per-seed trajectories with ``x``: the step for hub/local, the Pythia-equivalent step
    for the twin."""
    parts = []
    for arm in verdicts.trained_arms(frame, metric):
        traj = verdicts.seed_trajectories(frame, arm, metric)
        x = pl.col("pythia_step").fill_null(pl.col("step")) if is_twin(arm) else pl.col("step")
        parts.append(traj.with_columns(arm=pl.lit(arm), x=x))
    return pl.concat(parts) if parts else pl.DataFrame()


def small_multiples(
    frame: pl.DataFrame, ctx: FigureContext, out: Path, arm: str, name: str = "small_multiples"
) -> Drawn:
    """Fig. 3: one panel per block — trained trajectories of ``ctx.metric`` over the random-init band (also
    drawn for the token tail's concentration, as ``name``)."""
    band = verdicts.random_init_band(frame, ctx.metric, ctx.coverage)
    trained = trained_on_pythia_axis(frame, ctx.metric)
    table = verdicts.block_table(frame, arm, ctx.metric, ctx.coverage, ctx.totals.get(arm))
    blocks = sorted(set(band["block"].to_list()) | set(trained["block"].to_list() if len(trained) else []))
    ncols = min(4, len(blocks)) or 1
    nrows = math.ceil(len(blocks) / ncols) or 1
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.4 * ncols + 1, 2.5 * nrows + 1.4),
        sharex=True,
        sharey=True,
        layout="constrained",
        squeeze=False,
    )
    last = int(trained["x"].max()) if len(trained) else 1
    marks = {block: _panel(ax, block, band, trained, table, last, ctx, arm) for ax, block in zip(axes.flat, blocks)}
    for ax in list(axes.flat)[len(blocks) :]:
        ax.set_visible(False)
    legend = {}  # every panel's artists, one entry per label (a panel may lack a persistent-exit line)
    for ax in axes.flat:
        legend.update({lab: h for h, lab in zip(*ax.get_legend_handles_labels()) if lab not in legend})
    labels, handles = list(legend), list(legend.values())
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    for ax in list(axes.flat)[max(0, len(blocks) - ncols) : len(blocks)]:  # the lowest panel of each column
        ax.set_xlabel(step_label(ctx.log_until), fontsize=7)
    fig.supylabel(ctx.metric_label)
    fig.suptitle(ctx.title("Learned or architectural? Trained trajectory over the random-init band"), fontsize=11)
    return Drawn(
        name,
        save(fig, out, name),
        {"trained": trained, "band": band, "table": table, "persistent_x": marks},
    )


def _panel(
    ax,
    block: int,
    band: pl.DataFrame,
    trained: pl.DataFrame,
    table: pl.DataFrame,
    last: int,
    ctx: FigureContext,
    arm: str,
) -> list[int]:
    """Draw one block's panel; returns where its persistent-exit markers stand on the x axis (one per seed whose
    persistent exit holds; none otherwise)."""
    b = band.filter(pl.col("block") == block)
    if len(b) and b["band_low"][0] is not None:
        ax.axhspan(b["band_low"][0], b["band_high"][0], color="0.8", label=ctx.band_label(b["n_seeds"][0]))
    if len(b):
        ax.axhline(b["init_mean"][0], color="0.45", lw=0.8, ls=":", label="random init, mean")
    mine = trained.filter(pl.col("block") == block) if len(trained) else trained
    # the twin stands on its Pythia-equivalent step; say so wherever that is not its own step
    shifted = (
        bool(len(trained))
        and not trained.filter((pl.col("arm").str.starts_with("twin")) & (pl.col("x") != pl.col("step"))).is_empty()
    )
    arms = sorted(set(mine["arm"].to_list())) if len(mine) else []
    for (name, seed), g in mine.group_by("arm", "seed", maintain_order=True) if len(mine) else []:
        seeds = sorted(set(trained.filter(pl.col("arm") == name)["seed"].to_list()))
        _trained_line(ax, name, g, ctx.expected, seeds, seed, shifted, arms)
    held = table.filter((pl.col("block") == block) & pl.col("persistent_holds").fill_null(False)).sort("seed")
    # the twin is drawn on its Pythia-equivalent step, so its markers must be too
    column = "persistent_exit_pythia_step" if is_twin(arm) else "persistent_exit_step"
    all_seeds = sorted(set(table["seed"].to_list()))
    for seed, x in held.select("seed", column).iter_rows():
        many = len(all_seeds) > 1
        ax.axvline(
            x,
            color="k",
            lw=0.8,
            ls=seed_style(all_seeds, seed)[0] if many else "-.",
            label=f"persistent exit, {ARM_LABELS.get(arm, arm)}"
            + (f" seed {seed}" if many else "")
            + " (outside the band from here on)",
        )
    xs = held[column].to_list()
    row = table.filter(pl.col("block") == block)
    z = row["z"][0] if len(row) == 1 else None
    verdict = row["verdict"][0] if len(row) else None
    title = f"block {block}" + (f"   z = {z:+.1f}" if z is not None and math.isfinite(z) else "")
    ax.set_title(title + (f"\n{verdict}" if verdict else ""), fontsize=9)
    step_axis(ax, last, label="", log_until=ctx.log_until)
    ax.grid(alpha=0.3)
    return xs


def _trained_line(
    ax,
    name: str,
    g: pl.DataFrame,
    expected: dict[str, tuple[int, ...]],
    seeds: list[int],
    seed: int,
    pythia_axis: bool,
    arms: list[str] | None = None,
) -> None:
    """One seed of one trained arm, in the arm's colour and the seed's style (:func:`seed_style`), with its own
    legend entry; a scheduled step without a usable value is a gap in the line.  The twin stands on its
    Pythia-equivalent step; ``pythia_axis``: that differs from its own step, and the legend says so."""
    twin = is_twin(name)
    g = (
        on_grid(g, sorted(set(expected.get(name, ())) | set(g["step"].to_list())))
        .join(g.select("block", "step", "x"), on=["block", "step"], how="left")
        .with_columns(pl.col("x").fill_null(pl.col("step")))
    )
    label = ARM_LABELS.get(name, name) + (", at its Pythia-equivalent step" if twin and pythia_axis else "")
    ls, marker = seed_style(seeds, seed) if len(seeds) > 1 else ("--" if twin else "-", ".")
    ax.plot(
        g["x"],
        g["value"].fill_null(float("nan")),
        color=arm_colour(name, arms),
        lw=1.2 if len(seeds) == 1 else 0.9,
        ls=ls,
        marker=marker,
        ms=3,
        label=label + (f", seed {seed}" if len(seeds) > 1 else ""),
    )


def final_profile(frame: pl.DataFrame, ctx: FigureContext, out: Path) -> Drawn:
    """Fig. 4: each trained arm's last measured value per block, the band, and the reference profile."""
    band = verdicts.random_init_band(frame, ctx.metric, ctx.coverage)
    finals = pl.concat(
        [
            verdicts.block_table(frame, arm, ctx.metric, ctx.coverage, ctx.totals.get(arm))
            .with_columns(arm=pl.lit(arm))
            .select("arm", "seed", "block", "final_step", "final")
            .drop_nulls("final")
            for arm in verdicts.trained_arms(frame, ctx.metric)
        ]
        or [pl.DataFrame()],
        how="diagonal",
    )
    reference = pl.DataFrame(
        {
            "block": pl.Series(range(len(ctx.reference or ())), dtype=pl.Int64),
            "value": pl.Series(ctx.reference or (), dtype=pl.Float64),
        }
    )
    fig, ax = plt.subplots(figsize=(11, 6), layout="constrained")
    if len(band):
        ax.fill_between(
            band["block"],
            band["band_low"].fill_null(band["init_mean"]),
            band["band_high"].fill_null(band["init_mean"]),
            color="0.8",
            step="mid",
            label=ctx.band_label(band["n_seeds"].max()),
        )
        ax.plot(band["block"], band["init_mean"], ":", color="0.45", drawstyle="steps-mid", label="random init, mean")
    for (arm,), g in finals.group_by("arm", maintain_order=True) if len(finals) else []:
        n_seeds = g["seed"].n_unique()
        seeds = sorted(set(g["seed"].to_list()))
        for (seed,), s in g.sort("seed", "block").group_by("seed", maintain_order=True):
            ls, marker = seed_style(seeds, seed) if n_seeds > 1 else ("--", "s") if is_twin(arm) else ("-", "o")
            ax.plot(
                s["block"],
                s["final"],
                ls=ls,
                marker=marker,
                color=arm_colour(arm, verdicts.trained_arms(frame, ctx.metric)),
                lw=1.5 if n_seeds == 1 else 1.0,
                label=f"{ARM_LABELS.get(arm, arm)}"
                + (f", seed {seed}" if n_seeds > 1 else "")
                + f", final step {'/'.join(map(str, sorted(set(s['final_step'].to_list()))))}",
            )
    if len(reference):
        ax.plot(
            reference["block"],
            reference["value"],
            "^:",
            color="#e09f3e",
            label=f"reference: {ctx.reference_label or 'manifest'}",
        )
    ax.set_xlabel("block (depth: 0 = first FFN)")
    ax.set_ylabel(ctx.metric_label)
    ax.set_xticks(sorted(set(band["block"].to_list()) | set(finals["block"].to_list() if len(finals) else [])))
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(ctx.title("Final-step profile: trained vs random init"), fontsize=11)
    return Drawn(
        "final_profile", save(fig, out, "final_profile"), {"final": finals, "band": band, "reference": reference}
    )
