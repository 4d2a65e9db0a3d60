"""Forward hooks that feed every block's (x, y) rows into streaming statistics.

One forward pass of the trunk (never the LM head) over each batch of windows
updates every block's *sink* — per-group moment accumulators
(:class:`~trajectory.engine.stats.GroupMoments`) or a one-pass fit-then-score
(:class:`~trajectory.engine.heldout.FitThenScore`); no activation is kept beyond its batch.
Rows are routed by the *group* of the sequence they come from — by default
group 0 = train and 1 = held-out, so a held-out token never shares a window
with a train token; k-fold intervals use more groups (``2·fold + held_out``).

Two kinds of site can be hooked in the same pass:

* ``ffn``: x = the FFN's input (after its norm), y = its output (R²_lin);
* ``residual``: x = the block's input h_l, y = its output h_{l+1} (the
  residual-stream states of the secretly-linear score).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import torch
import torch.nn as nn

from .adapters import Adapter
from .stats import BlockStats, GroupMoments


class Sink(Protocol):
    """Where one block's rows of one site go, group by group: every row of group g arrives before any row of
    a later group (:meth:`FFNProbe.run` sorts the windows).  Implemented by
    :class:`~trajectory.engine.stats.GroupMoments` and :class:`~trajectory.engine.heldout.FitThenScore`."""

    def update(self, group: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add rows ``x`` (n, d_in) and ``y`` (n, d_out) of ``group``."""


def moments(n_groups: int = 2, precision: str = "float64") -> Callable[[int, int], GroupMoments]:
    """A sink factory: per-group moment accumulators (:class:`~trajectory.engine.stats.GroupMoments`)."""
    return lambda d_in, d_out: GroupMoments(d_in, d_out, n_groups, precision)


class FFNProbe:
    """Feeds every block's (x, y) rows of each site into its sink, in one forward pass.

    ``sinks`` maps a site (``"ffn"``, ``"residual"``) to a factory ``(d_in, d_out) → Sink``;
    the default is float64 train/held-out moments at the FFN site.
    """

    def __init__(
        self, model: nn.Module, adapter: Adapter, sinks: dict[str, Callable[[int, int], Sink]] | None = None
    ) -> None:
        self.model, self.adapter = model, adapter
        self.blocks = adapter.blocks(model)
        d = model.config.hidden_size
        sinks = sinks or {"ffn": moments()}
        site_modules = {"ffn": adapter.ffn_modules, "residual": adapter.residual_modules}
        self.sites = {site: site_modules[site] for site in sinks}
        # accumulators[site][block]: that block's sink
        self.accumulators = {site: [make(d, d) for _ in self.blocks] for site, make in sinks.items()}
        self._x: dict[tuple[str, int], torch.Tensor] = {}
        self._groups: torch.Tensor | None = None  # (batch,) long
        self._present: list[int] = []

    @property
    def stats(self) -> list[BlockStats]:
        """The FFN site's (train, held-out) pairs; only meaningful with the default sinks."""
        return [BlockStats(*g.groups[:2]) for g in self.accumulators["ffn"]]

    def _update(self, site: str, i: int, x: torch.Tensor, y: torch.Tensor) -> None:
        # x, y: (batch, seq, d)
        sink = self.accumulators[site][i]
        if len(self._present) == 1:
            sink.update(self._present[0], x.flatten(0, 1), y.flatten(0, 1))
            return
        for g in self._present:  # ascending: a boundary batch gives its train rows first
            mask = self._groups == g
            sink.update(g, x[mask].flatten(0, 1), y[mask].flatten(0, 1))

    @contextmanager
    def _hooks(self) -> Iterator[None]:
        handles = []
        for site, modules in self.sites.items():
            for i, block in enumerate(self.blocks):
                m_in, m_out = modules(block)

                def pre(_m, args, key=(site, i)):
                    self._x[key] = args[0]

                def post(_m, _args, out, key=(site, i)):
                    y = out[0] if isinstance(out, tuple) else out
                    self._update(key[0], key[1], self._x.pop(key), y)

                handles.append(m_in.register_forward_pre_hook(pre))
                handles.append(m_out.register_forward_hook(post))
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            self._x.clear()

    @torch.no_grad()
    def run(self, ids: np.ndarray, groups: np.ndarray, batch_size: int, device: str = "cpu", progress=None) -> None:
        """Forward ``ids`` (n_seq, seq_len) in batches of ``batch_size`` windows.

        ``groups`` (n_seq,) is a bool (held-out) or integer group label per window.
        Windows are sorted by group (stably), so batches rarely mix groups and every
        row of group g reaches a sink before any row of a later group, which
        :class:`~trajectory.engine.heldout.FitThenScore` relies on; the statistics do not
        depend on the batching.
        """
        groups = np.asarray(groups).astype(np.int64)
        order = np.argsort(groups, kind="stable")
        trunk = self.adapter.trunk(self.model).eval()
        kwargs = {"use_cache": False} if self.adapter.causal else {}
        with self._hooks():
            for start in range(0, len(order), batch_size):
                sel = order[start : start + batch_size]
                self._groups = torch.as_tensor(groups[sel], device=device)
                self._present = sorted(set(groups[sel].tolist()))
                trunk(input_ids=torch.as_tensor(ids[sel], dtype=torch.long, device=device), **kwargs)
                if progress is not None:
                    progress(len(sel))
