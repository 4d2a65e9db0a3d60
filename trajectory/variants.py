"""Twin variants as data: a regulariser, the arm names of variants, and the perturbation null's settings.

A leaf (it imports only :mod:`trajectory.errors`): :mod:`trajectory.config` re-exports these.  A variant
``[twin.variants.NAME]`` is a :class:`~trajectory.config.TwinSpec` over ``[twin]``; its arm is ``twin:NAME``
(:func:`variant_arm`), and the perturbation null's arm is ``twin:perturbation``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError

#: The plain twin's arm (``trajectory.config.Arm.TWIN``).
TWIN = "twin"
#: Regularisers a twin can add to its loss (:mod:`trajectory.arms.regularisers`).
REGULARISERS = ("cosine",)


@dataclass(frozen=True)
class Regulariser:
    """``regulariser = { kind = "cosine", weight = λ }``: the training loss becomes ``CE + λ · R``
    (``R``: :func:`trajectory.arms.regularisers.cosine_term`)."""

    kind: str = "cosine"
    weight: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in REGULARISERS:
            raise ConfigError(f"[twin] regulariser kind must be one of {list(REGULARISERS)}, got {self.kind!r}")
        if isinstance(self.weight, bool) or not (isinstance(self.weight, int | float) and math.isfinite(self.weight)):
            raise ConfigError(f"[twin] regulariser weight must be a finite number, got {self.weight!r}")


#: The arm of a twin variant ``[twin.variants.NAME]`` is ``twin:NAME``; the perturbation null's is this one.
PERTURBATION = "perturbation"


def variant_arm(name: str | None) -> str:
    """``twin`` for the plain twin (None), ``twin:NAME`` for a variant."""
    return TWIN if name is None else f"{TWIN}:{name}"


def is_twin(arm: str) -> bool:
    """Whether ``arm`` is a twin run (the plain twin, a variant or the perturbation null): steps are twin updates."""
    return arm == TWIN or str(arm).startswith(f"{TWIN}:")


@dataclass(frozen=True)
class PerturbationSpec:
    """``[twin.perturbation]``: the moved-but-not-learned null (:mod:`trajectory.arms.perturb`).

    At ``points`` measured steps ``t`` of the plain twin's seed ``seed`` (spread evenly over its schedule, the
    last included), ``draws`` models ``θ₀ + ε_k`` are measured, ``ε_k`` a Gaussian direction scaled per tensor
    to ``‖θ_t − θ₀‖_F``, drawn from ``SeedSequence([draw_seed, seed, t, k])``."""

    draws: int = 5
    points: int = 10
    seed: int = 0
    draw_seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("draws", 2), ("points", 1)):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
                raise ConfigError(f"[twin.perturbation] {name} must be an integer ≥ {low}, got {value!r}")
        for name in ("seed", "draw_seed"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63):
                raise ConfigError(f"[twin.perturbation] {name} must be an integer in [0, 2⁶³ − 1], got {value!r}")


def perturbation_steps(steps: tuple[int, ...], points: int) -> tuple[int, ...]:
    """``points`` of the measured ``steps`` (step 0 left out: there θ_t − θ₀ = 0), evenly spaced by index, the
    last included: ``steps[round(i · (n − 1) / (points − 1))]`` over the n steps after 0."""
    moved = [s for s in steps if s > 0]
    if points >= len(moved):
        return tuple(moved)
    if points == 1:
        return (moved[-1],)
    return tuple(sorted({moved[round(i * (len(moved) - 1) / (points - 1))] for i in range(points)}))
