"""Companion metrics against training step (fig. 6): one panel per metric the store holds.

Secretly-linear score of h_l → h_{l+1} (with and without the residual), the
effective rank of the affine map, the linear-swap Δloss, the Δloss of removing the
FFN, the smallest low-rank map within ``lowrank_tol``, and R²_lin with its k-fold
95% interval — each drawn only from stored rows, one line per block coloured by
depth, on the same step axis as fig. 1.  The random-init draws' values of each
metric (one per seed and block, at step 0) are drawn as crosses in the block's
colour, so an untrained model's spread — its Δloss noise, say — is visible beside
the trained line.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import polars as pl

from .. import verdicts
from .context import (
    ARM_LABELS,
    Drawn,
    FigureContext,
    depth_colourbar,
    depth_colours,
    on_grid,
    save,
    seeds_mean,
    step_axis,
    step_label,
)

PANELS = {
    "linearity_score": "linearity score\nh_l→h_l+1 (unitless)",
    "linearity_score_nores": "linearity score,\nresidual removed",
    "effective_rank": "effective rank\n(dims, 90% of R²_lin)",
    "swap_dloss": "swap Δloss\n(nats/token)",
    "remove_dloss": "remove Δloss\n(nats/token)",
    "lowrank_rank": "low-rank rank within\nlowrank_tol (dims)",
    "r2_lin_cv": "R²_lin, k-fold mean\nand 95% interval",
}


def present(frame: pl.DataFrame, arm: str) -> list[str]:
    """The companion metrics with at least one usable row of ``arm`` in the store."""
    rows = frame.filter(pl.col("arm") == arm)
    return [m for m in PANELS if m in rows.columns and len(verdicts.usable(rows, m))]


def companion_steps(frame: pl.DataFrame, arm: str) -> set[int]:
    """The steps of ``arm`` measured with companions, when the store shows they were measured at only some
    steps (``[metric] companion_points``: units without them carry ``metric_config == metric_core``); else
    the empty set (every scheduled step has them, and a missing one is a gap)."""
    if "metric_core" not in frame.columns:
        return set()
    rows = frame.filter(pl.col("arm") == arm)
    plain = rows.filter(pl.col("metric_config") == pl.col("metric_core"))
    if plain.is_empty():
        return set()
    return set(rows.filter(pl.col("metric_config") != pl.col("metric_core"))["step"].to_list())


def companion_metrics(frame: pl.DataFrame, ctx: FigureContext, out: Path, arm: str) -> Drawn | None:
    """Fig. 6, or None when the store holds no companion metric for ``arm``."""
    metrics = present(frame, arm)
    if not metrics:
        return None
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(10, 2.6 * len(metrics) + 1.2), sharex=True, layout="constrained", squeeze=False
    )
    drawn = {}
    colour, mappable = depth_colours(sorted(set(frame["block"].drop_nulls().to_list())))
    # every scheduled step, measured or not: a companion measured at a few of them is a row of separate points,
    # never a line drawn across the steps between them (where R²_lin may peak)
    scheduled = set(ctx.expected.get(arm, ())) | companion_steps(frame, arm)
    for ax, metric in zip(axes[:, 0], metrics):
        traj = verdicts.trajectory(frame, arm, metric)
        steps = sorted(scheduled | set(traj["step"].to_list()))
        for (block,), g in on_grid(traj, steps).group_by("block", maintain_order=True):
            ax.plot(g["step"], g["value"].fill_null(float("nan")), color=colour(block), lw=1.2, marker="o", ms=3)
        if metric == "r2_lin_cv":
            _interval(ax, frame, arm, colour)
        draws = _random_init(ax, frame, metric, colour, first=ax is axes[0, 0])
        if draws is not None:
            drawn[f"random_init:{metric}"] = draws
        ax.set_ylabel(PANELS[metric], fontsize=9)
        ax.grid(alpha=0.3)
        step_axis(ax, steps[-1] if steps else 1, label="", log_until=ctx.log_until)
        drawn[metric] = traj
    axes[-1, 0].set_xlabel(step_label(ctx.log_until))
    depth_colourbar(fig, mappable, axes[:, 0].tolist(), int(frame["block"].max()) + 1)
    what = f"Companion metrics, {ARM_LABELS.get(arm, arm)}{seeds_mean(frame, arm)}"
    fig.suptitle(ctx.title(what), fontsize=11)
    return Drawn("companions", save(fig, out, "companions"), drawn)


def _interval(ax, frame: pl.DataFrame, arm: str, colour) -> None:
    low = verdicts.trajectory(frame, arm, "r2_lin_cv_low")
    high = verdicts.trajectory(frame, arm, "r2_lin_cv_high")
    both = low.join(high, on=["block", "step"], suffix="_high").sort("block", "step")
    for (block,), g in both.group_by("block", maintain_order=True):
        ax.fill_between(g["step"], g["value"], g["value_high"], color=colour(block), alpha=0.2, lw=0)


def _random_init(ax, frame: pl.DataFrame, metric: str, colour, first: bool) -> pl.DataFrame | None:
    """Every random-init draw's value of ``metric`` (seed × block) as a cross at step 0, in the block's colour;
    returns the draws (None when there are none)."""
    draws = (
        verdicts.usable(frame.filter(pl.col("arm") == verdicts.BAND_ARM), metric) if metric in frame.columns else None
    )
    if draws is None or draws.is_empty():
        return None
    for (block,), g in draws.group_by("block", maintain_order=True):
        ax.scatter([0] * g.height, g[metric].cast(pl.Float64), color=colour(block), marker="x", s=14, lw=0.8, zorder=3)
    if first:
        ax.scatter([], [], color="0.4", marker="x", s=14, lw=0.8, label="random-init draws (step 0)")
        ax.legend(loc="best", fontsize=7, frameon=False)
    return draws.select("seed", "block", metric)


def token_tail(frame: pl.DataFrame, ctx: FigureContext, out: Path, arm: str) -> Drawn | None:
    """Tail concentration (``token_tail_top1``) vs step per block, every trained arm over the random-init
    draws' band, as fig. 3 draws R²_lin; None when the store holds no token tail for ``arm``."""
    metric = "token_tail_top1"
    rows = frame.filter(pl.col("arm") == arm)
    if metric not in rows.columns or not len(verdicts.usable(rows, metric)):
        return None
    from .band import small_multiples

    return small_multiples(frame, replace(ctx, metric=metric), out, arm, name="token_tail")
