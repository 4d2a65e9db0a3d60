"""Does linearity predict replaceability?  Replacement Δloss against R²_lin, one point per block and step.

One panel per replacement Δloss the store holds (the affine swap, removal; :mod:`trajectory.verdicts.
replaceability`): every trained arm's (block, step) point, seed means, coloured by depth, with Spearman's ρ
and its 95% bootstrap interval in the panel's title.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from ..verdicts.replaceability import DLOSS, found
from .context import Drawn, FigureContext, depth_colourbar, depth_colours, save


def replaceability(frame, ctx: FigureContext, out: Path) -> Drawn | None:
    """The figure, or None when no Δloss column has 3 points with R²_lin."""
    assoc = found(frame, ctx.metric)
    if not assoc:
        return None
    fig, axes = plt.subplots(1, len(assoc), figsize=(5.2 * len(assoc) + 1, 4.2), layout="constrained", squeeze=False)
    blocks = sorted(set(frame["block"].drop_nulls().to_list()))
    colour, mappable = depth_colours(blocks)
    for ax, a in zip(axes[0], assoc):
        p = a.points
        ax.scatter(p[ctx.metric], p["dloss"], c=[colour(b) for b in p["block"]], s=16, alpha=0.85)
        ax.set_xlabel(f"{ctx.metric} (held-out)")
        ax.set_ylabel(f"{DLOSS[a.dloss]} Δloss (nats/token)")
        ax.set_title(f"ρ = {a.rho:.2f}  [{a.low:.2f}, {a.high:.2f}]  (n = {a.n})", fontsize=9)
        ax.grid(alpha=0.3)
    depth_colourbar(fig, mappable, axes[0].tolist(), max(blocks) + 1 if blocks else 1)
    fig.suptitle(ctx.title("Does linearity predict replaceability?"), fontsize=11)
    return Drawn("replaceability", save(fig, out, "replaceability"), {a.dloss: a.points for a in assoc})
