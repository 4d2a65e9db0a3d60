"""The held-out tokens that carry a block's non-linearity: ``trajectory tokens`` and ``tj.top_tokens``.

For one block, each held-out token's share ``s_t = ‖r_t‖² / ‖y_t − ȳ‖²`` (:mod:`.tokentail`), exactly:
a first pass over every window fits the affine map on train rows and gives the held-out mean ȳ
(:class:`~.heldout.FitThenScore`); a second pass over the held-out windows only forms each row's ``s_t``
with that map and that ȳ, in float64, and keeps the ``top`` largest (with window and position) and, per
token id, the sum and count of ``s_t``.  Memory: ``top`` rows and two vocabulary-sized vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..data.tokens import EvalTokens
from ..errors import ConfigError
from .adapters import adapter_for
from .heldout import FitThenScore
from .measure import check_budget, check_vocab, evaluating, split_by_sequence
from .probe import FFNProbe
from .stats import AffineFit


class _Ignore:
    """A sink for the blocks not asked about."""

    def update(self, group: int, x: torch.Tensor, y: torch.Tensor) -> None:
        pass


def only_block(block: int, make: Callable) -> Callable:
    """A sink factory that gives ``make(d_in, d_out)`` to the ``block``-th block (in probe order) only."""
    made = iter(range(1 << 30))
    return lambda d_in, d_out: make(d_in, d_out) if next(made) == block else _Ignore()


class RowShares:
    """One block's exact per-row ``s_t`` under a fixed fit and held-out mean; the top rows and per-id sums."""

    wants_rows = True

    def __init__(self, fit: AffineFit, mean_y: np.ndarray, ids: np.ndarray, top: int, vocab: int) -> None:
        self.w, self.b = torch.from_numpy(fit.w), torch.from_numpy(fit.b)  # (d_in, d_out), (d_out,) float64
        self.mean = torch.from_numpy(mean_y)  # (d_out,)
        self.ids, self.top = ids.reshape(-1), top  # flat token ids of the scanned windows
        self.best_s, self.best_rows = np.zeros(0), np.zeros(0, dtype=np.int64)
        self.id_sum, self.id_count = np.zeros(vocab), np.zeros(vocab, dtype=np.int64)
        self.sse = 0.0

    def update(self, group: int, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        x, y = x.double().cpu(), y.double().cpu()  # (n, d)
        q = torch.addmm(self.b, x, self.w).sub_(y).square_().sum(1).numpy()  # ‖r_t‖²
        dev = y.sub_(self.mean).square_().sum(1).numpy()  # ‖y_t − ȳ‖²
        with np.errstate(divide="ignore", invalid="ignore"):
            s = q / dev
        rows_np = rows.cpu().numpy()
        self.sse += float(q.sum())
        tok = self.ids[rows_np]
        ok = np.isfinite(s)
        self.id_sum += np.bincount(tok[ok], weights=s[ok], minlength=len(self.id_sum))
        self.id_count += np.bincount(tok[ok], minlength=len(self.id_count))
        s_all, r_all = np.concatenate([self.best_s, s[ok]]), np.concatenate([self.best_rows, rows_np[ok]])
        keep = np.argsort(-s_all, kind="stable")[: self.top]
        self.best_s, self.best_rows = s_all[keep], r_all[keep]


@dataclass(frozen=True)
class TopTokens:
    """What :func:`top_tokens` finds: the ``top`` rows (share, window, position, token id) by ``s_t``, largest
    first, and per token id seen at least ``min_count`` times, its mean share and count (by mean share)."""

    block: int
    n_test: int
    rows: list[dict]
    by_id: list[dict]


def _fit_and_mean(model, adapter, tokens: EvalTokens, is_test: np.ndarray, block: int, cfg, batch: int, device):
    """Pass 1: the block's fit on train rows and its held-out mean ȳ."""
    make = only_block(block, lambda d_in, d_out: FitThenScore(d_in, d_out, cfg.compute_dtype, cfg.rcond))
    probe = FFNProbe(model, adapter, {"ffn": make})
    probe.run(tokens.ids, is_test, batch, device=device)
    sink = probe.accumulators["ffn"][block]
    fit = sink.affine_fit()
    if fit is None or not sink.finite():
        raise ConfigError(f"block {block} has nonfinite activations: no residual shares to rank")
    return fit, sink.heldout.mean()


def top_tokens(model, tokens: EvalTokens, cfg, block: int, top: int = 20, min_count: int = 5, device="cpu"):
    """The ``top`` held-out tokens of ``block`` by ``s_t`` and the per-id means (module docstring)."""
    adapter = adapter_for(model.config.model_type)
    n_blocks = len(adapter.blocks(model))
    if not (isinstance(block, int) and 0 <= block < n_blocks):
        raise ConfigError(f"--block must be one of 0 … {n_blocks - 1} (the model has {n_blocks} blocks), got {block}")
    if not (isinstance(top, int) and top >= 1):
        raise ConfigError(f"--top must be a positive integer, got {top!r}")
    check_vocab(tokens, model.get_input_embeddings().num_embeddings)
    is_test = split_by_sequence(tokens.ids.shape[0], cfg)
    check_budget(tokens, is_test, model.config.hidden_size)
    batch = max(1, cfg.batch_tokens // tokens.ids.shape[1])
    with evaluating(model):
        fit, mean = _fit_and_mean(model, adapter, tokens, is_test, block, cfg, batch, device)
        test_ids = tokens.ids[is_test]
        vocab = model.get_input_embeddings().num_embeddings
        sink = RowShares(fit, mean, test_ids, top, vocab)
        probe = FFNProbe(model, adapter, {"ffn": only_block(block, lambda d_in, d_out: sink)})
        probe.run(test_ids, np.ones(len(test_ids), dtype=np.int64), batch, device=device)
    windows, seq = np.flatnonzero(is_test), tokens.ids.shape[1]
    rows = [
        {
            "share": float(s),
            "window": int(windows[r // seq]),
            "position": int(r % seq),
            "token_id": int(test_ids.flat[r]),
        }
        for s, r in zip(sink.best_s, sink.best_rows)
    ]
    seen = np.flatnonzero(sink.id_count >= min_count)
    means = sink.id_sum[seen] / sink.id_count[seen]
    by_id = [
        {"token_id": int(i), "mean_share": float(m), "count": int(sink.id_count[i])}
        for m, i in sorted(zip(means, seen), key=lambda p: -p[0])
    ]
    return TopTokens(block, int(is_test.sum()) * seq, rows, by_id)
