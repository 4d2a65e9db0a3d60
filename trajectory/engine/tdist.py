"""Student's t distribution for integer degrees of freedom: its CDF in closed form and its quantile.

No SciPy: the CDF for integer ν is a finite sum (Abramowitz & Stegun 26.7.3–4).  With
``θ = atan(t / √ν)`` and ``A(t|ν) = P(|T| ≤ t)``::

    ν odd:   A = (2/π) [θ + sin θ (cos θ + (2/3) cos³θ + … + (2·4···(ν−3))/(1·3···(ν−2)) cos^(ν−2) θ)]
             (for ν = 1 the bracket is θ alone: the Cauchy distribution)
    ν even:  A = sin θ [1 + (1/2) cos²θ + (1·3)/(2·4) cos⁴θ + … + (1·3···(ν−3))/(2·4···(ν−2)) cos^(ν−2) θ]

and ``P(T ≤ t) = (1 + sign(t) A(|t| | ν)) / 2``.  The quantile inverts the CDF by bisection on
``[0, 10⁶]`` to 1e-12 (the CDF is strictly increasing; 12.71, the largest 97.5% quantile, is at ν = 1).
Used for the k-fold interval (:mod:`trajectory.engine.companions`) and the random-init prediction band
(:mod:`trajectory.verdicts`).
"""

from __future__ import annotations

import functools
import math


def t_cdf(t: float, df: int) -> float:
    """P(T ≤ t) for Student's t with ``df`` (a positive integer) degrees of freedom."""
    if not (isinstance(df, int) and df >= 1):
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:  # odd: the series in cos θ, cos³θ, … starts at cos θ
        term, total = math.cos(theta), 0.0
        for k in range(1, (df - 1) // 2 + 1):  # terms cos^(2k-1) θ, k = 1 … (ν−1)/2
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        a = (2.0 / math.pi) * (theta + s * total)
    else:  # even: the series in 1, cos²θ, … up to cos^(ν−2) θ
        term, total = 1.0, 0.0
        for k in range(df // 2):
            total += term
            term *= c2 * (2 * k + 1) / (2 * k + 2)
        a = s * total
    return 0.5 + math.copysign(0.5 * min(a, 1.0), t)


@functools.lru_cache(maxsize=1024)  # a band over 154 steps × 12 blocks asks for the same few quantiles
def t_quantile(p: float, df: int) -> float:
    """The ``p``-quantile of Student's t with ``df`` degrees of freedom, ``0 < p < 1``."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1e6
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
