"""Companion metrics against their definitions computed directly in numpy."""

import numpy as np
import pytest
import torch

from trajectory.engine.companions import effective_rank, kfold_interval, linearity_scores, reduced_rank_r2
from trajectory.engine.stats import MomentAccumulator, fit_affine, r2_scores


def acc(x, y):
    a = MomentAccumulator(x.shape[1], y.shape[1])
    a.update(torch.from_numpy(x), torch.from_numpy(y))
    return a


def data(n=3000, d=10, k=8, rank=3, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)
    a = rng.normal(size=(d, rank)) @ rng.normal(size=(rank, k))
    return x, x @ a + rng.normal(size=k) + noise * rng.normal(size=(n, k))


def numpy_rrr_r2(x_tr, y_tr, x_te, y_te, r):
    mx, my = x_tr.mean(0), y_tr.mean(0)
    b = np.linalg.lstsq(x_tr - mx, y_tr - my, rcond=None)[0]
    fitted = (x_tr - mx) @ b
    v = np.linalg.eigh(fitted.T @ fitted)[1][:, ::-1][:, :r]
    br = b @ v @ v.T
    pred = (x_te - mx) @ br + my
    return 1 - ((y_te - pred) ** 2).sum() / ((y_te - y_te.mean(0)) ** 2).sum()


def test_reduced_rank_curve_equals_explicit_reduced_rank_regression():
    x, y = data()
    tr, te = acc(x[:2400], y[:2400]), acc(x[2400:], y[2400:])
    curve = reduced_rank_r2(tr, te)
    for r in range(1, 9):
        assert curve[r - 1] == pytest.approx(numpy_rrr_r2(x[:2400], y[:2400], x[2400:], y[2400:], r), abs=1e-9)
    assert curve[-1] == pytest.approx(r2_scores(fit_affine(tr), te)["r2_lin"], abs=1e-9)


@pytest.mark.parametrize("rank", [1, 3, 5])
def test_effective_rank_recovers_a_planted_rank(rank):
    x, y = data(rank=rank, noise=0.05, seed=rank)
    tr, te = acc(x[:2400], y[:2400]), acc(x[2400:], y[2400:])
    assert effective_rank(tr, te, frac=0.999) == rank
    assert 1 <= effective_rank(tr, te, frac=0.9) <= rank


def paper_score(x, y):
    """Razzhigaev et al.: centre, Frobenius-normalise, least-squares linear map, 1 - residual."""
    xt = (x - x.mean(0)) / np.linalg.norm(x - x.mean(0))
    yt = (y - y.mean(0)) / np.linalg.norm(y - y.mean(0))
    a = np.linalg.lstsq(xt, yt, rcond=1e-6)[0]  # the engine's cutoff (a LayerNorm output is singular)
    return 1 - np.linalg.norm(yt - xt @ a) ** 2


def test_linearity_score_is_the_papers_definition_with_and_without_residual():
    rng = np.random.default_rng(5)
    h0 = rng.normal(size=(2000, 6))
    h1 = h0 + np.tanh(h0 @ rng.normal(size=(6, 6))) + 0.1 * rng.normal(size=(2000, 6))
    got = linearity_scores(acc(h0[:1500], h1[:1500]), acc(h0[1500:], h1[1500:]))
    assert got["linearity_score"] == pytest.approx(paper_score(h0, h1), abs=1e-9)
    assert got["linearity_score_nores"] == pytest.approx(paper_score(h0, h1 - h0), abs=1e-9)
    assert got["linearity_score_nores"] < got["linearity_score"]  # the residual path is the linear part
    held = r2_scores(fit_affine(acc(h0[:1500], h1[:1500])), acc(h0[1500:], h1[1500:]))["r2_lin"]
    assert got["linearity_score_heldout"] == pytest.approx(held, abs=1e-12)


def test_kfold_interval_equals_explicit_cross_validation():
    x, y = data(n=2500, noise=1.0)
    folds = np.array_split(np.arange(2500), 5)
    scores = []
    for f in range(5):
        train = np.concatenate([folds[g] for g in range(5) if g != f])
        a = np.hstack([x[train], np.ones((len(train), 1))])
        beta = np.linalg.lstsq(a, y[train], rcond=None)[0]
        te = folds[f]
        resid = y[te] - np.hstack([x[te], np.ones((len(te), 1))]) @ beta
        scores.append(1 - (resid**2).sum() / ((y[te] - y[te].mean(0)) ** 2).sum())
    got = kfold_interval([acc(x[f], y[f]) for f in folds])
    half = 2.7764451052 * np.std(scores, ddof=1) / np.sqrt(5)  # t(0.975, 4) from a printed table
    assert got["r2_lin_cv"] == pytest.approx(np.mean(scores), abs=1e-9)
    assert got["r2_lin_cv_low"] == pytest.approx(np.mean(scores) - half, abs=1e-9)
    assert got["r2_lin_cv_low"] < got["r2_lin_cv"] < got["r2_lin_cv_high"]
