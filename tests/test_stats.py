"""The closed-form fit and R² against analytic answers and numpy's lstsq."""

import numpy as np
import pytest
import torch

from trajectory.engine.stats import BlockStats, MomentAccumulator


def _stats(x_tr, y_tr, x_te, y_te, chunks=1) -> BlockStats:
    s = BlockStats.empty(x_tr.shape[1], y_tr.shape[1])
    for xs, ys in zip(np.array_split(x_tr, chunks), np.array_split(y_tr, chunks)):
        s.train.update(torch.from_numpy(xs), torch.from_numpy(ys))
    for xs, ys in zip(np.array_split(x_te, chunks), np.array_split(y_te, chunks)):
        s.test.update(torch.from_numpy(xs), torch.from_numpy(ys))
    return s


def lstsq_r2(x_tr, y_tr, x_te, y_te, rcond=1e-6):
    """Independent reference: numpy lstsq on [X, 1], residuals on held-out rows."""
    a = np.hstack([x_tr, np.ones((len(x_tr), 1))])
    beta = np.linalg.lstsq(a, y_tr, rcond=rcond)[0]
    resid = y_te - np.hstack([x_te, np.ones((len(x_te), 1))]) @ beta
    sse = (resid**2).sum()
    return 1 - sse / ((y_te - y_te.mean(0)) ** 2).sum(), 1 - sse / ((y_te - y_te.mean()) ** 2).sum()


def planted(n, d=16, k=12, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    cov_root = rng.normal(size=(d, d)) / np.sqrt(d)
    a = rng.normal(size=(d, k))
    b = rng.normal(size=k) * 10
    x = rng.normal(size=(n, d)) @ cov_root
    y = x @ a + b + noise * rng.normal(size=(n, k))
    sigma = cov_root.T @ cov_root
    signal = np.einsum("ij,ik,kj->j", a, sigma, a)  # aⱼᵀ Σ aⱼ per output dim
    r2 = signal.sum() / (signal + noise**2).sum()
    r2_global = 1 - k * noise**2 / ((signal + noise**2).sum() + ((b - b.mean()) ** 2).sum())
    return x, y, r2, r2_global


def test_planted_map_has_its_analytic_r2_under_both_centrings():
    x, y, r2, r2_global = planted(60_000)
    out = _stats(x[:50_000], y[:50_000], x[50_000:], y[50_000:]).finalize()
    assert out["r2_lin"] == pytest.approx(r2, abs=1e-3)
    assert out["r2_lin_global"] == pytest.approx(r2_global, abs=1e-3)
    assert out["r2_lin_global"] > out["r2_lin"] + 0.01  # the two centrings really differ here
    assert (out["n_train"], out["n_test"]) == (50_000, 10_000)


def layernorm_rows(n, d=24, seed=1):
    """Rows of a LayerNorm output with gain and bias: [X, 1] is exactly rank-deficient."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d)
    zn = (z - z.mean(1, keepdims=True)) / z.std(1, keepdims=True)
    return zn * rng.uniform(0.5, 2, size=d) + rng.normal(size=d)


def test_exactly_singular_layernorm_input_gives_the_lstsq_answer():
    x = layernorm_rows(4000)
    rng = np.random.default_rng(2)
    y = np.tanh(x @ rng.normal(size=(24, 10))) + 0.1 * rng.normal(size=(4000, 10))
    assert np.linalg.matrix_rank(np.hstack([x, np.ones((4000, 1))])) == 24  # 25 columns, rank 24
    out = _stats(x[:3000], y[:3000], x[3000:], y[3000:]).finalize()
    ref, ref_global = lstsq_r2(x[:3000], y[:3000], x[3000:], y[3000:])
    assert out["r2_lin"] == pytest.approx(ref, abs=1e-9)
    assert out["r2_lin_global"] == pytest.approx(ref_global, abs=1e-9)
    assert out["rank"] == 23  # centred Sxx drops the mean direction and the LayerNorm's hyperplane


def test_median_dim_r2_is_the_median_of_per_dim_scores():
    x, y, _, _ = planted(5000, noise=1.0)
    y = y * np.linspace(0.1, 3, y.shape[1])  # dims of very different scale
    out = _stats(x[:4000], y[:4000], x[4000:], y[4000:]).finalize()
    per_dim = []
    for j in range(y.shape[1]):
        per_dim.append(lstsq_r2(x[:4000], y[:4000, j : j + 1], x[4000:], y[4000:, j : j + 1])[0])
    assert out["r2_median_dim"] == pytest.approx(float(np.median(per_dim)), abs=1e-9)


def test_batching_and_merging_do_not_change_the_numbers():
    x, y, _, _ = planted(7000)
    one = _stats(x[:6000], y[:6000], x[6000:], y[6000:], chunks=1).finalize()
    many = _stats(x[:6000], y[:6000], x[6000:], y[6000:], chunks=37).finalize()
    left = _stats(x[:3000], y[:3000], x[6000:6500], y[6000:6500])
    right = _stats(x[3000:6000], y[3000:6000], x[6500:], y[6500:])
    merged = left.merge(right).finalize()
    for key in ("r2_lin", "r2_lin_global", "r2_median_dim"):
        assert many[key] == pytest.approx(one[key], abs=1e-9)
        assert merged[key] == pytest.approx(one[key], abs=1e-9)


def test_moments_match_numpy_and_a_large_mean_costs_no_digits():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 5)) + 1e4  # mean far larger than spread
    y = rng.normal(size=(3000, 3))
    acc = MomentAccumulator(5, 3)
    for xs, ys in zip(np.array_split(x, 7), np.array_split(y, 7)):
        acc.update(torch.from_numpy(xs), torch.from_numpy(ys))
    xc, yc = x - x.mean(0), y - y.mean(0)
    np.testing.assert_allclose(acc.sxx, xc.T @ xc, rtol=1e-9)
    np.testing.assert_allclose(acc.sxy, xc.T @ yc, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(acc.syy, (yc**2).sum(0), rtol=1e-12)
