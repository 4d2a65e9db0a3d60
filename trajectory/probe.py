"""Forward hooks that feed every block's FFN (x, y) rows into streaming statistics.

One forward pass of the trunk (never the LM head) over each batch of windows
updates every block's :class:`~trajectory.stats.BlockStats`; no activation is
kept beyond its batch.  Rows are routed to the train or held-out accumulator by
the split of the *sequence* they come from, so a held-out token never shares a
window with a train token.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from .adapters import Adapter
from .stats import BlockStats


class FFNProbe:
    """Collects (x, y) statistics for all blocks of ``model`` in one forward pass."""

    def __init__(self, model: nn.Module, adapter: Adapter, compute_dtype=torch.float64) -> None:
        self.model, self.adapter, self.compute_dtype = model, adapter, compute_dtype
        self.blocks = adapter.blocks(model)
        d = model.config.hidden_size
        self.stats = [BlockStats.empty(d, d) for _ in self.blocks]
        self._x: dict[int, torch.Tensor] = {}
        self._is_test: torch.Tensor | None = None  # (batch,) bool

    def _update(self, i: int, x: torch.Tensor, y: torch.Tensor) -> None:
        # x, y: (batch, seq, d)
        mask = self._is_test
        if not mask.any():
            self.stats[i].train.update(x.flatten(0, 1), y.flatten(0, 1), self.compute_dtype)
        elif mask.all():
            self.stats[i].test.update(x.flatten(0, 1), y.flatten(0, 1), self.compute_dtype)
        else:
            self.stats[i].train.update(x[~mask].flatten(0, 1), y[~mask].flatten(0, 1), self.compute_dtype)
            self.stats[i].test.update(x[mask].flatten(0, 1), y[mask].flatten(0, 1), self.compute_dtype)

    @contextmanager
    def _hooks(self) -> Iterator[None]:
        handles = []
        for i, block in enumerate(self.blocks):
            m_in, m_out = self.adapter.ffn_modules(block)

            def pre(_m, args, i=i):
                self._x[i] = args[0]

            def post(_m, _args, out, i=i):
                y = out[0] if isinstance(out, tuple) else out
                self._update(i, self._x.pop(i), y)

            handles.append(m_in.register_forward_pre_hook(pre))
            handles.append(m_out.register_forward_hook(post))
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            self._x.clear()

    @torch.no_grad()
    def run(self, ids: np.ndarray, is_test: np.ndarray, batch_size: int, device: str = "cpu",
            progress=None) -> list[BlockStats]:
        """Forward ``ids`` (n_seq, seq_len) in batches of ``batch_size`` windows.

        Train windows go first, so batches rarely mix splits; the statistics do
        not depend on the order or the batching.
        """
        order = np.argsort(is_test, kind="stable")
        trunk = self.adapter.trunk(self.model).eval()
        with self._hooks():
            for start in range(0, len(order), batch_size):
                sel = order[start : start + batch_size]
                batch = torch.as_tensor(ids[sel], dtype=torch.long, device=device)
                self._is_test = torch.as_tensor(is_test[sel], device=device)
                trunk(input_ids=batch, use_cache=False) if self.adapter.causal else trunk(input_ids=batch)
                if progress is not None:
                    progress(len(sel))
        return self.stats
