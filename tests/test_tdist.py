"""Student's t quantiles against printed tables (no SciPy): the band and the k-fold interval rest on them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trajectory.engine.tdist import t_cdf, t_quantile

# (p, degrees of freedom, quantile) from a printed t table (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2)
TABLE = [
    (0.975, 1, 12.706),
    (0.975, 2, 4.303),
    (0.975, 4, 2.776),
    (0.975, 9, 2.262),
    (0.975, 30, 2.042),
    (0.975, 100, 1.984),
    (0.995, 4, 4.604),
    (0.95, 2, 2.920),
    (0.90, 3, 1.638),
    (0.99, 10, 2.764),
]


@pytest.mark.parametrize("p, df, expected", TABLE)
def test_quantile_matches_the_printed_table(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=6e-4)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=6e-4)


def test_closed_forms_for_one_and_two_degrees_of_freedom():
    for p in (0.6, 0.9, 0.975, 0.999):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)  # Cauchy
        a = 4 * p * (1 - p)
        assert t_quantile(p, 2) == pytest.approx(2 * (p - 0.5) * math.sqrt(2 / a), rel=1e-9)


def test_cdf_agrees_with_a_monte_carlo_draw_and_tends_to_the_normal():
    rng = np.random.default_rng(0)
    draws = rng.standard_t(5, size=400_000)
    for t in (-2.0, 0.3, 1.5, 3.0):
        assert t_cdf(t, 5) == pytest.approx((draws <= t).mean(), abs=3e-3)
    assert t_quantile(0.975, 5000) == pytest.approx(1.95996, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        t_cdf(1.0, 0)
