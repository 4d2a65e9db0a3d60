"""Snedecor's F distribution: its CDF, and the two-sided test of two variances that it gives.

No SciPy.  For ``F ~ F(d1, d2)`` (the ratio of two independent χ² variables over their degrees of freedom),

    P(F ≤ x) = I_z(d1/2, d2/2),   z = d1·x / (d1·x + d2),

where ``I_z(a, b)`` is the regularized incomplete beta function, evaluated by its continued fraction
(Abramowitz & Stegun 26.5.8; modified Lentz's method), on ``z < (a + 1)/(a + b + 2)`` directly and otherwise
through ``I_z(a, b) = 1 − I_{1−z}(b, a)``, where the fraction converges fast.  Used to ask whether the trained
runs' spread differs from the random-init draws' (:mod:`trajectory.verdicts.runs`).
"""

from __future__ import annotations

import math

_TINY = 1e-300


def _fraction(a: float, b: float, z: float) -> float:
    """The continued fraction of ``I_z(a, b)`` (A&S 26.5.8), to relative precision 1e-15."""
    c, d = 1.0, 1.0 - (a + b) * z / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    out = d
    for m in range(1, 10_000):
        for num in (
            m * (b - m) * z / ((a + 2 * m - 1) * (a + 2 * m)),  # the even step d_2m
            -(a + m) * (a + b + m) * z / ((a + 2 * m) * (a + 2 * m + 1)),  # the odd step d_2m+1
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            out *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return out


def beta_inc(a: float, b: float, z: float) -> float:
    """The regularized incomplete beta function ``I_z(a, b)`` for ``a, b > 0`` and ``0 ≤ z ≤ 1``."""
    if not (a > 0 and b > 0):
        raise ValueError(f"beta_inc needs a, b > 0, got {a}, {b}")
    if not 0.0 <= z <= 1.0:
        raise ValueError(f"beta_inc needs 0 ≤ z ≤ 1, got {z}")
    if z in (0.0, 1.0):
        return z
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(z) + b * math.log1p(-z)
    if z < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _fraction(a, b, z) / a
    return 1.0 - math.exp(log_front) * _fraction(b, a, 1.0 - z) / b


def f_cdf(x: float, d1: int, d2: int) -> float:
    """P(F ≤ x) for Snedecor's F with ``d1`` and ``d2`` (positive) degrees of freedom."""
    if not (d1 >= 1 and d2 >= 1):
        raise ValueError(f"degrees of freedom must be positive, got {d1}, {d2}")
    if x <= 0:
        return 0.0
    if math.isinf(x):
        return 1.0
    return beta_inc(d1 / 2.0, d2 / 2.0, d1 * x / (d1 * x + d2))


def variance_ratio_p(ratio: float, d1: int, d2: int) -> float:
    """Two-sided p-value of ``ratio = s1² / s2²`` under equal variances: ``2 · min(P(F ≤ ratio), P(F ≥ ratio))``
    with ``F ~ F(d1, d2)`` (``d1 = n1 − 1``, ``d2 = n2 − 1``; both samples normal and independent)."""
    low = f_cdf(ratio, d1, d2)
    return min(1.0, 2.0 * min(low, 1.0 - low))
