"""The settings of a compression run, typed and validated once."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from ..config import MetricConfig
from ..errors import ConfigError


def _metric() -> MetricConfig:
    return MetricConfig(compute_dtype="float64")


@dataclass(frozen=True)
class CompressConfig:
    """How blocks are fitted, scored and chosen.

    ``metric``: the split (``heldout_frac``, ``seed``, ``split``), the fit's ``rcond`` and the forward
    batch (``batch_tokens``); its products default to float64, since the maps are used, not just scored.
    ``ranks``: the ranks r of the low-rank ablations (None: 1, 2, 4, … below d, and d).
    ``budget_dloss``: the joint plan's budget, the held-out Δloss (nats; for an encoder, the relative error
    of the final hidden states) that the compressed model may cost; None: no plan.
    """

    metric: MetricConfig = field(default_factory=_metric)
    ranks: tuple[int, ...] | None = None
    budget_dloss: float | None = None

    def __post_init__(self) -> None:
        if self.ranks is not None:
            ranks = tuple(self.ranks)
            if not ranks or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
                raise ConfigError(f"ranks must be positive integers, got {self.ranks!r}")
            object.__setattr__(self, "ranks", tuple(sorted(set(ranks))))
        b = self.budget_dloss
        if b is not None and not (isinstance(b, int | float) and math.isfinite(b) and b >= 0):
            raise ConfigError(f"--budget-dloss must be a finite number ≥ 0 (nats), got {b!r}")

    def digest(self) -> str:
        """16 hex digits of every setting that can change a map or a number (with the metric's digest)."""
        values = {"metric": self.metric.digest(), "ranks": self.ranks, "budget_dloss": self.budget_dloss}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
