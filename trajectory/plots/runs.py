"""Several trained runs of one architecture: per block, the trained band against the random-init band.

One panel per block (small multiples, shared axes): the random-init prediction band as a grey span, each
run's measured values as a thin line, and over the steps every run measured the trained band — the
prediction interval for one new run (:data:`trajectory.verdicts.runs.TRAINED_BAND`) — as a blue ribbon around the
runs' mean.  The panel's title carries the block's answer (:func:`trajectory.verdicts.runs.runs_agree`) and the
final values' agreement (:func:`trajectory.verdicts.runs.final_agreement`).  Only measured values are drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import polars as pl

from ..verdicts.runs import Comparison
from .context import ARM_COLOURS, Drawn, FigureContext, save, step_axis, step_label

NAME = "trained_band"


def trained_band(cmp: Comparison, ctx: FigureContext, out: Path) -> Drawn:
    """Small multiples: per block, the runs, their trained band, and the random-init band (module docstring)."""
    blocks = sorted(set(cmp.blocks["block"].to_list()) | set(cmp.init_band["block"].to_list()))
    if not blocks:
        return Drawn(NAME, (), skipped="no block has a usable value")
    ncols = min(4, len(blocks))
    nrows = math.ceil(len(blocks) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(max(3.4 * ncols + 1, 10), 2.6 * nrows + 1.7), sharex=True, sharey=True,
        layout="constrained", squeeze=False,
    )  # fmt: skip
    last = int(cmp.series["step"].max()) if len(cmp.series) else 1
    for ax, block in zip(axes.flat, blocks):
        _panel(ax, block, cmp, ctx, last)
    for ax in list(axes.flat)[len(blocks) :]:
        ax.set_visible(False)
    legend: dict = {}
    for ax in axes.flat:
        legend.update({lab: h for h, lab in zip(*ax.get_legend_handles_labels()) if lab not in legend})
    ncol = 2 if ncols == 4 else 1  # two columns of legend need the width of four panels
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)
    for ax in axes[-1]:
        ax.set_xlabel(step_label(ctx.log_until))  # the axis step_axis drew: symlog, or log-then-linear
    fig.supylabel(ctx.metric_label)
    fig.suptitle(ctx.title(f"{len(cmp.runs)} trained runs: trained band vs random-init band"), fontsize=11)
    return Drawn(NAME, save(fig, out, NAME), {"band": cmp.band, "series": cmp.series, "blocks": cmp.blocks})


def _panel(ax, block: int, cmp: Comparison, ctx: FigureContext, last: int) -> None:
    """One block: the random-init band, every run's line, the trained band and mean, and the answers."""
    init = cmp.init_band.filter(pl.col("block") == block)
    if len(init) and init["band_low"][0] is not None:
        label = f"random init: {cmp.coverage:.0%} prediction band for one new draw (S = {init['n_seeds'][0]} seeds)"
        ax.axhspan(init["band_low"][0], init["band_high"][0], color="0.82", label=label)
    colour = ARM_COLOURS.get(cmp.runs[0].arm, "#1f4e9c") if cmp.runs else "#1f4e9c"
    series = cmp.series.filter(pl.col("block") == block)
    for (_,), g in series.group_by("run", maintain_order=True):
        ax.plot(g["step"], g["value"], color=colour, lw=0.6, alpha=0.45, label="one run (measured steps)")
    band = cmp.band.filter((pl.col("block") == block) & pl.col("trained_low").is_not_null())
    if len(band):
        ax.fill_between(
            band["step"], band["trained_low"], band["trained_high"], color=colour, alpha=0.25, lw=0,
            label=f"trained runs: {cmp.coverage:.0%} prediction band for one new run (R = {len(cmp.runs)}; "
            "steps every run measured)",
        )  # fmt: skip
        ax.plot(band["step"], band["trained_mean"], color=colour, lw=1.4, label="trained runs, mean")
    answer = cmp.blocks.filter(pl.col("block") == block)
    title = f"block {block}"
    if len(answer):
        verdict = answer["verdict"][0] if answer["agreement"][0] == "agree" else answer["agreement"][0]
        title += f"\nverdicts: {verdict} · final: {answer['final_agreement'][0]}"
    ax.set_title(title, fontsize=8.5)
    step_axis(ax, last, label="", log_until=ctx.log_until)
    ax.grid(alpha=0.3)
