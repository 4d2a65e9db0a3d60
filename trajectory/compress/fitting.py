"""The windows a compression run uses, and each block's FFN moments on a (possibly patched) model.

The split is :func:`trajectory.engine.measure.split_by_document`'s, the same one R²_lin uses: maps are fitted
on train windows only and every loss is measured on held-out windows only.  A *sequential* fit takes the
moments with earlier choices already patched in, so block l's map sees the inputs the compressed model gives
it (:mod:`.plan`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch.nn as nn

from ..data.tokens import EvalTokens
from ..engine.adapters import Adapter
from ..engine.measure import check_budget, check_positions, check_vocab, split_by_document
from ..engine.probe import FFNProbe, moments
from ..engine.stats import BlockStats
from .spec import CompressConfig


@dataclass(frozen=True)
class Windows:
    """Train and held-out windows (n, seq_len) of one evaluation, and the forward batch in windows."""

    train: np.ndarray
    heldout: np.ndarray
    batch: int
    data_hash: str


def split_windows(model: nn.Module, tokens: EvalTokens, cfg: CompressConfig) -> Windows:
    """The split of ``tokens`` (checked against the model's vocabulary and the fit's row budget)."""
    check_vocab(tokens, model.get_input_embeddings().num_embeddings)
    check_positions(model.config, tokens.ids.shape[1])
    is_test = split_by_document(tokens, cfg.metric)
    check_budget(tokens, is_test, model.config.hidden_size)
    batch = max(1, cfg.metric.batch_tokens // tokens.ids.shape[1])
    return Windows(tokens.ids[~is_test], tokens.ids[is_test], batch, tokens.data_hash)


def block_stats(model: nn.Module, adapter: Adapter, win: Windows, precision: str, device: str) -> list[BlockStats]:
    """Every block's train and held-out FFN moments, in one forward pass of ``model`` as it is now."""
    ids = np.concatenate([win.train, win.heldout])
    groups = np.r_[np.zeros(len(win.train), np.int64), np.ones(len(win.heldout), np.int64)]
    probe = FFNProbe(model, adapter, {"ffn": moments(2, precision)})
    probe.run(ids, groups, win.batch, device=device)
    return probe.stats


def train_moments(model: nn.Module, adapter: Adapter, win: Windows, precision: str, device: str) -> list:
    """Every block's train FFN moments only (:class:`~trajectory.engine.stats.MomentAccumulator`)."""
    probe = FFNProbe(model, adapter, {"ffn": moments(1, precision)})
    probe.run(win.train, np.zeros(len(win.train), np.int64), win.batch, device=device)
    return [sink.groups[0] for sink in probe.accumulators["ffn"]]
