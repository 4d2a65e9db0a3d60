"""Every block × every ablation, one at a time: the held-out cost, what it saves, and R²_lin beside it.

For block l and ablation a (:mod:`trajectory.engine.ablation`: remove, mean, rank r, affine), the map is
fitted on the intact model's train moments of block l, put in the FFN's place with every other block
intact, and the held-out windows are scored (:class:`~trajectory.engine.replaced.HeldoutCost`: Δloss in
nats with its paired 95% t interval over windows, and the perplexity ratio; for an encoder the relative
error of the final hidden states).  ``params_removed`` and ``flops_removed`` follow the counting convention
of :mod:`trajectory.engine.ablation`.  ``r2_lin`` is the block's held-out R²_lin from the same moments
(fitted on train windows, scored on held-out ones).  ``third`` puts block l of L in the lower, middle or
upper third of the stack: ``⌊3l / L⌋``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from ..data.tokens import EvalTokens
from ..engine.ablation import as_module, ffn_cost, fit_map, map_cost, menu, patched
from ..engine.adapters import Adapter, adapter_for
from ..engine.measure import evaluating
from ..engine.replaced import HeldoutCost
from ..engine.stats import fit_affine, r2_scores
from .fitting import Windows, block_stats, split_windows
from .spec import CompressConfig

THIRDS = ("lower", "middle", "upper")


def third(block: int, n_blocks: int) -> str:
    """``lower``, ``middle`` or ``upper``: block ``block`` of ``n_blocks`` in thirds of the stack."""
    return THIRDS[min(2, 3 * block // n_blocks)]


@dataclass
class AblationReport:
    """The intact model's held-out loss (NaN for an encoder), one row per block × ablation, and the shape."""

    causal: bool
    intact_loss: float
    rows: list[dict]
    shape: dict = field(default_factory=dict)


def model_shape(model: nn.Module) -> dict:
    """The few numbers that name a model's shape in tables and benchmarks."""
    c = model.config
    return {
        "model_type": c.model_type,
        "d_model": c.hidden_size,
        "n_blocks": c.num_hidden_layers,
        "d_ffn": getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * c.hidden_size,
    }


def ablation_table(model: nn.Module, tokens: EvalTokens, cfg: CompressConfig, device: str = "cpu") -> AblationReport:
    """Every block × every ablation of ``model`` on ``tokens`` (module docstring); the model is unchanged."""
    adapter = adapter_for(model.config.model_type)
    with evaluating(model):
        win = split_windows(model, tokens, cfg)
        heldout = HeldoutCost(model, adapter, win.heldout, win.batch, device)
        rows = ablation_rows(model, adapter, win, heldout, cfg, device)
    return AblationReport(adapter.causal, heldout.intact_loss, rows, model_shape(model))


def ablation_rows(
    model, adapter: Adapter, win: Windows, heldout: HeldoutCost, cfg: CompressConfig, device: str
) -> list[dict]:
    """The rows of :func:`ablation_table` on windows already split, against ``heldout``'s intact values."""
    stats = block_stats(model, adapter, win, cfg.metric.compute_dtype, device)
    blocks, d = adapter.blocks(model), model.config.hidden_size
    rows = []
    for i, (block, s) in enumerate(zip(blocks, stats)):
        r2 = r2_scores(fit_affine(s.train, cfg.metric.rcond), s.test)["r2_lin"]
        full = ffn_cost(adapter, block)
        for ab in menu(d, cfg.ranks):
            with patched(adapter, model, {i: as_module(fit_map(ab, s.train, cfg.metric.rcond), block)}):
                scored = heldout.summary(model)
            saved = full - map_cost(ab, d, d)
            rows.append(
                {
                    "block": i,
                    "third": third(i, len(blocks)),
                    "ablation": ab.label,
                    "rank": ab.rank or None,
                    **scored,
                    "params_removed": saved.params,
                    "flops_removed": saved.flops,
                    "r2_lin": r2,
                }
            )
    return rows
