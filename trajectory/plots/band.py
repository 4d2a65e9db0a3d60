"""Trained against untrained: per-block small multiples over the random-init band (fig. 3) and
the final-step profile against the band and a published reference (fig. 4).

The band is ``mean ± 2 sd`` over random-init seeds (:func:`trajectory.verdicts.random_init_band`).
A trained value outside it is a property learned in training, not one fixed by the architecture.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import polars as pl

from .. import verdicts
from .context import ARM_COLOURS, ARM_LABELS, Drawn, FigureContext, on_grid, save, step_axis


def trained_on_pythia_axis(frame: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Every trained arm's trajectory with ``x``: the step for hub/local, the Pythia-equivalent step for the twin."""
    parts = []
    for arm in verdicts.trained_arms(frame, metric):
        traj = verdicts.trajectory(frame, arm, metric)
        x = pl.col("pythia_step").fill_null(pl.col("step")) if arm == "twin" else pl.col("step")
        parts.append(traj.with_columns(arm=pl.lit(arm), x=x))
    return pl.concat(parts) if parts else pl.DataFrame()


def small_multiples(frame: pl.DataFrame, ctx: FigureContext, out: Path, arm: str) -> Drawn:
    """Fig. 3: one panel per block — trained trajectories over the random-init band."""
    band = verdicts.random_init_band(frame, ctx.metric)
    trained = trained_on_pythia_axis(frame, ctx.metric)
    table = verdicts.block_table(frame, arm, ctx.metric)
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
    marks = {
        block: _panel(ax, block, band, trained, table, last, ctx.expected, arm) for ax, block in zip(axes.flat, blocks)
    }
    for ax in list(axes.flat)[len(blocks) :]:
        ax.set_visible(False)
    legend = {}  # every panel's artists, one entry per label (block 0 may lack an emergence line)
    for ax in axes.flat:
        legend.update({lab: h for h, lab in zip(*ax.get_legend_handles_labels()) if lab not in legend})
    labels, handles = list(legend), list(legend.values())
    fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False)
    for ax in axes[-1]:
        ax.set_xlabel("training step (symlog)")
    fig.supylabel(ctx.metric_label)
    fig.suptitle(ctx.title("Learned or architectural? Trained trajectory over the random-init band"), fontsize=11)
    return Drawn(
        "small_multiples",
        save(fig, out, "small_multiples"),
        {"trained": trained, "band": band, "table": table, "emergence_x": marks},
    )


def _panel(
    ax,
    block: int,
    band: pl.DataFrame,
    trained: pl.DataFrame,
    table: pl.DataFrame,
    last: int,
    expected: dict[str, tuple[int, ...]],
    arm: str,
) -> int | None:
    """Draw one block's panel; returns where its emergence marker stands on the x axis (None: no marker)."""
    b = band.filter(pl.col("block") == block)
    if len(b) and b["init_sd"][0] is not None:
        ax.axhspan(b["band_low"][0], b["band_high"][0], color="0.8", label="random init, mean ± 2 sd")
    if len(b):
        ax.axhline(b["init_mean"][0], color="0.45", lw=0.8, ls=":", label="random init, mean")
    for (name,), g in (
        trained.filter(pl.col("block") == block).group_by("arm", maintain_order=True) if len(trained) else []
    ):
        twin = name == "twin"
        # a scheduled step without a usable value is a gap in the line; the twin sits on its Pythia step
        g = (
            on_grid(g, sorted(set(expected.get(name, ())) | set(g["step"].to_list())))
            .join(g.select("block", "step", "x"), on=["block", "step"], how="left")
            .with_columns(pl.col("x").fill_null(pl.col("step")))
        )
        ax.plot(
            g["x"],
            g["value"].fill_null(float("nan")),
            color=ARM_COLOURS[name],
            lw=1.2,
            ls="--" if twin else "-",
            marker=".",
            ms=3,
            label=ARM_LABELS[name] + (", at its Pythia-equivalent step" if twin else ""),
        )
    row = table.filter(pl.col("block") == block)
    # the twin is drawn on its Pythia-equivalent step, so its emergence marker must be too
    column = "emergence_pythia_step" if arm == "twin" and "emergence_pythia_step" in row.columns else "emergence_step"
    emerged = row[column][0] if len(row) else None
    if emerged is not None:
        ax.axvline(
            emerged, color="k", lw=0.8, ls="-.", label=f"emergence step, {arm} (stays outside the band from here on)"
        )
    z = row["z"][0] if len(row) else None
    ax.set_title(f"block {block}" + (f"   z = {z:+.1f}" if z is not None and math.isfinite(z) else ""), fontsize=9)
    step_axis(ax, last, label="")
    ax.grid(alpha=0.3)
    return emerged


def final_profile(frame: pl.DataFrame, ctx: FigureContext, out: Path) -> Drawn:
    """Fig. 4: each trained arm's last measured value per block, the band, and the reference profile."""
    band = verdicts.random_init_band(frame, ctx.metric)
    finals = pl.concat(
        [
            verdicts.block_table(frame, arm, ctx.metric)
            .with_columns(arm=pl.lit(arm))
            .select("arm", "block", "final_step", "final")
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
            label=f"random init, mean ± 2 sd ({band['n_seeds'].max()} seeds)",
        )
        ax.plot(band["block"], band["init_mean"], ":", color="0.45", drawstyle="steps-mid", label="random init, mean")
    for (arm,), g in finals.group_by("arm", maintain_order=True) if len(finals) else []:
        at = sorted(set(g["final_step"].to_list()))
        ax.plot(
            g["block"],
            g["final"],
            "o-" if arm != "twin" else "s--",
            color=ARM_COLOURS[arm],
            label=f"{ARM_LABELS[arm]}, final step {'/'.join(map(str, at))}",
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
