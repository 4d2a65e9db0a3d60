"""Snedecor's F distribution against closed forms and a printed table (no SciPy): the runs' final-value test
(:func:`trajectory.verdicts.final_agreement`) rests on it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trajectory.engine.fdist import beta_inc, f_cdf, variance_ratio_p
from trajectory.engine.tdist import t_cdf

XS = (0.05, 0.3, 1.0, 2.5, 8.0, 60.0)


@pytest.mark.parametrize("d2", [1, 2, 4, 9, 30])
def test_closed_forms_for_two_and_one_numerator_degrees_of_freedom(d2):
    for x in XS:
        assert f_cdf(x, 2, d2) == pytest.approx(1 - (1 + 2 * x / d2) ** (-d2 / 2), abs=1e-12)
        assert f_cdf(x, 1, d2) == pytest.approx(2 * t_cdf(math.sqrt(x), d2) - 1, abs=1e-12)  # F(1, ν) = T²
        assert f_cdf(x, 7, 2) == pytest.approx((7 * x / (7 * x + 2)) ** 3.5, abs=1e-12)  # d2 = 2


# (p, d1, d2, quantile) from a printed F table (NIST/SEMATECH e-Handbook, table 1.3.6.7.3)
TABLE = [(0.95, 9, 4, 5.999), (0.95, 4, 9, 3.633), (0.99, 5, 10, 5.636), (0.90, 3, 20, 2.380)]


@pytest.mark.parametrize("p, d1, d2, q", TABLE)
def test_the_printed_table(p, d1, d2, q):
    assert f_cdf(q, d1, d2) == pytest.approx(p, abs=2e-4)
    assert 1 - f_cdf(1 / q, d2, d1) == pytest.approx(p, abs=2e-4)  # 1/F ~ F(d2, d1)


def test_beta_inc_symmetry_and_a_monte_carlo_variance_ratio():
    for a, b, z in ((0.5, 2.0, 0.3), (4.5, 1.5, 0.8), (3.0, 7.0, 0.05)):
        assert beta_inc(a, b, z) + beta_inc(b, a, 1 - z) == pytest.approx(1.0, abs=1e-13)
    rng = np.random.default_rng(0)
    ratios = rng.normal(size=(200_000, 10)).var(axis=1, ddof=1) / rng.normal(size=(200_000, 5)).var(axis=1, ddof=1)
    for x in (0.3, 1.0, 3.0):
        assert f_cdf(x, 9, 4) == pytest.approx(np.mean(ratios <= x), abs=4e-3)
    assert variance_ratio_p(1.0, 9, 9) == pytest.approx(1.0)
    assert variance_ratio_p(5.999, 9, 4) == pytest.approx(0.10, abs=4e-4)  # two-sided: twice the 5% tail
