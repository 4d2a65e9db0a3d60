"""Figures from the store: five views of FFN linearity across training (PNG + SVG each).

1. ``lines_by_block``  — the metric vs step, one line per block, coloured by depth;
2. ``heatmap``         — block × step;
3. ``small_multiples`` — per block, trained trajectories over the random-init band;
4. ``final_profile``   — final value per block vs the band and a reference profile;
5. ``twin_vs_pythia``  — the twin against the hub (or local) arm by fraction of training and by tokens
   seen; not drawn (``Drawn.skipped`` says why) unless both arms have usable rows;
6. ``companions``      — the companion metrics the store holds, vs step (when there are any);
   ``token_tail``      — the token tail's concentration (top-1% SSE share) per block over the random-init band;
7. ``replaceability`` — replacement Δloss against R²_lin over blocks and steps (when the store has a Δloss);
8. ``trained_band``    — several experiments' runs: per block, the trained band vs the random-init band
   (:mod:`.runs`; drawn by ``trajectory report A.toml B.toml …``, not by :func:`plot_all`).

Each function reads a store frame (``Store.read()``) and returns a :class:`~trajectory.plots.context.Drawn`
with the data it drew, so tests can hold a figure to the store's numbers.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .. import verdicts
from ..errors import TrajectoryError
from .band import final_profile, small_multiples
from .companions import companion_metrics, token_tail
from .context import Drawn, FigureContext, context_from
from .replaceability import replaceability
from .runs import trained_band
from .trajectories import heatmap, lines_by_block, twin_vs_pythia

__all__ = [
    "Drawn",
    "FigureContext",
    "context_from",
    "plot_all",
    "lines_by_block",
    "heatmap",
    "small_multiples",
    "final_profile",
    "twin_vs_pythia",
    "trained_band",
]


def plot_all(frame: pl.DataFrame, ctx: FigureContext, out: str | Path) -> list[Drawn]:
    """Draw every figure into ``out``; the trajectory views use the first trained arm (hub, local, twin)."""
    arms = verdicts.trained_arms(frame, ctx.metric)
    if not arms:
        raise TrajectoryError(
            f"experiment {ctx.experiment}: no usable trained rows (hub, local or twin) in the "
            f"store; run `trajectory sweep` first"
        )
    out = Path(out)
    arm = arms[0]
    drawn = [
        lines_by_block(frame, ctx, out, arm),
        heatmap(frame, ctx, out, arm),
        small_multiples(frame, ctx, out, arm),
        final_profile(frame, ctx, out),
        twin_vs_pythia(frame, ctx, out),
    ]
    extras = [
        companion_metrics(frame, ctx, out, arm),
        token_tail(frame, ctx, out, arm),
        replaceability(frame, ctx, out),
    ]
    return drawn + [e for e in extras if e is not None]
