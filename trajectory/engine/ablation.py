"""What an FFN block is replaced by, fitted in closed form from its train moments, and what that saves.

Four ablations of block l's FFN ``y = FFN(x)`` (x its input after the block's norm, y its output before the
residual add; :class:`~trajectory.engine.adapters.Adapter`):

* ``remove``  ``ŷ = 0``: the block's FFN is gone (the residual stream passes unchanged);
* ``mean``    ``ŷ = my``: the FFN's mean output over the train rows, a constant;
* ``affine``  ``ŷ = Wᵀx + b``, the least-squares map of :func:`~trajectory.engine.stats.fit_affine`
  (``W = Sxx⁺ Sxy``, ``b = my − Wᵀmx``), as :mod:`trajectory.engine.swap` uses it;
* ``rank r``  ``ŷ = (xU)Vᵀ + b_r``, the best rank-r affine map in the train squared error (reduced-rank
  regression, :func:`~trajectory.engine.companions.low_rank_fit`: ``U Vᵀ = B V_r V_rᵀ`` with V_r the top r
  eigenvectors of ``Bᵀ Sxx B``, ``b_r = my − (U Vᵀ)ᵀ mx``).  At r = d it is the affine map.

Every map is an :class:`FFNMap`, a module that :meth:`.Adapter.replace_ffn` puts in the FFN's place.

**Counting convention** (:func:`module_cost`).  *Parameters*: every element of every parameter of the
FFN's modules (weights and biases), each counted once.  *FLOPs per token*: 2 per element of every 2-D
weight (one multiply and one add per weight and token); bias adds, activations, a gate's elementwise
product and norms are not counted.  A map costs the same way: rank r has ``r (d_in + d_out) + d_out``
parameters and ``2 r (d_in + d_out)`` FLOPs per token, the affine map ``d_in d_out + d_out`` and
``2 d_in d_out``, the mean ``d_out`` and none, removal none.  What an ablation *removes* is the FFN's cost
minus the map's (negative where the map is the larger, as rank r ≥ d_in d_out / (d_in + d_out) is).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ..errors import ConfigError
from .adapters import Adapter
from .companions import low_rank_fit
from .stats import MomentAccumulator, fit_affine

#: The kinds of ablation, cheapest first.
KINDS = ("remove", "mean", "rank", "affine")


@dataclass(frozen=True, order=True)
class Ablation:
    """One way to replace an FFN: ``kind`` (:data:`KINDS`) and, for ``rank``, the rank r ≥ 1."""

    kind: str
    rank: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown ablation {self.kind!r}; choose from {', '.join(KINDS)}")
        if (self.kind == "rank") != (self.rank >= 1):
            raise ConfigError(f"a rank ablation needs a rank ≥ 1 and no other kind has one, got {self}")

    @property
    def label(self) -> str:
        """``remove``, ``mean``, ``affine`` or ``rank4``: how tables and compression.json name it."""
        return f"rank{self.rank}" if self.kind == "rank" else self.kind

    @classmethod
    def parse(cls, label: str) -> Ablation:
        if label.startswith("rank") and label[4:].isdigit():
            return cls("rank", int(label[4:]))
        return cls(label)


def rank_ladder(d: int) -> tuple[int, ...]:
    """r = 1, 2, 4, … below d, then d itself."""
    ranks = [1 << k for k in range(d.bit_length()) if (1 << k) < d]
    return (*ranks, d)


def menu(d: int, ranks: tuple[int, ...] | None = None) -> tuple[Ablation, ...]:
    """Every ablation of a block of width ``d``: remove, mean, rank r for each r of ``ranks``
    (default :func:`rank_ladder`), affine."""
    rs = rank_ladder(d) if ranks is None else ranks
    return (Ablation("remove"), Ablation("mean"), *(Ablation("rank", r) for r in rs), Ablation("affine"))


class FFNMap(nn.Module):
    """``y = b + x W`` (affine), ``b + (x U) V`` (low rank), ``b`` (mean) or ``0`` (remove); fixed tensors."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        unknown = set(tensors) - {"bias", "w", "u", "v"}
        if unknown:
            raise ValueError(f"an FFN map has bias, w, u and v, not {sorted(unknown)}")
        for name, t in tensors.items():
            self.register_parameter(name, nn.Parameter(t, requires_grad=False))
        self.d_out = int(self.v.shape[1] if "v" in tensors else self.w.shape[1] if "w" in tensors else -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., d_in)
        if hasattr(self, "w"):
            return torch.addmm(self.bias, x.flatten(0, -2), self.w).view(*x.shape[:-1], -1)
        if hasattr(self, "u"):
            return torch.addmm(self.bias, x.flatten(0, -2) @ self.u, self.v).view(*x.shape[:-1], -1)
        if hasattr(self, "bias"):
            return self.bias.expand(*x.shape[:-1], -1)
        return torch.zeros_like(x)  # every family's FFN maps d_model to d_model


def fit_map(ablation: Ablation, train: MomentAccumulator, rcond: float = 1e-6) -> dict[str, np.ndarray]:
    """The float64 tensors of ``ablation``'s map, fitted on the train moments (module docstring)."""
    if ablation.kind == "remove":
        return {}
    if ablation.kind == "mean":
        return {"bias": train.my}
    if ablation.kind == "affine":
        fit = fit_affine(train, rcond)
        return {"w": fit.w, "bias": fit.b}
    u, v, b = low_rank_fit(train, min(ablation.rank, train.d_out), rcond)
    return {"u": u, "v": v, "bias": b}


def as_module(tensors: dict[str, np.ndarray], like: nn.Module) -> FFNMap:
    """An :class:`FFNMap` in the dtype and on the device of ``like``'s parameters."""
    ref = next(like.parameters())
    return FFNMap(
        {k: torch.as_tensor(np.ascontiguousarray(v), dtype=ref.dtype, device=ref.device) for k, v in tensors.items()}
    )


@dataclass(frozen=True)
class Cost:
    """Parameters and FLOPs per token (module docstring's convention)."""

    params: int
    flops: int

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.params - other.params, self.flops - other.flops)


def module_cost(*modules: nn.Module) -> Cost:
    """The cost of ``modules``' parameters, each parameter counted once however often it is shared."""
    params = {id(p): p for m in modules for p in m.parameters()}.values()
    return Cost(sum(p.numel() for p in params), 2 * sum(p.numel() for p in params if p.ndim == 2))


def ffn_cost(adapter: Adapter, block: nn.Module) -> Cost:
    """The cost of ``block``'s FFN: the modules from its input x to its output y."""
    m_in, m_out = adapter.ffn_modules(block)
    return module_cost(m_in, m_out)


def map_cost(ablation: Ablation, d_in: int, d_out: int) -> Cost:
    """What the map of ``ablation`` costs, by the same convention (no model needed)."""
    if ablation.kind == "remove":
        return Cost(0, 0)
    if ablation.kind == "mean":
        return Cost(d_out, 0)
    weights = d_in * d_out if ablation.kind == "affine" else ablation.rank * (d_in + d_out)
    return Cost(weights + d_out, 2 * weights)


@contextmanager
def patched(adapter: Adapter, model: nn.Module, maps: dict[int, nn.Module]) -> Iterator[nn.Module]:
    """Within the context, block i's FFN is ``maps[i]`` for every i in ``maps``; restored after."""
    blocks = adapter.blocks(model)
    undo = [adapter.replace_ffn(blocks[i], module) for i, module in maps.items()]
    try:
        yield model
    finally:
        for restore in reversed(undo):
            restore()
