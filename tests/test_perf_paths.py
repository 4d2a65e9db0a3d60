"""The fast paths of the statistics: the upper-block-triangle product, row chunks, the fixed shift, the
precisions of the products, and the one-pass held-out scoring."""

import numpy as np
import pytest
import torch
from builders import tiny_model
from test_stats import layernorm_rows, lstsq_r2, planted

from trajectory.config import DataSpec, MetricConfig
from trajectory.data.tokens import eval_tokens
from trajectory.engine import stats as stats_mod
from trajectory.engine.heldout import FitThenScore
from trajectory.engine.measure import measure_blocks
from trajectory.engine.stats import BlockStats, GroupMoments, MomentAccumulator


def _accumulate(x, y, chunks, precision="float64") -> MomentAccumulator:
    acc = MomentAccumulator(x.shape[1], y.shape[1])
    for xs, ys in zip(np.array_split(x, chunks), np.array_split(y, chunks)):
        acc.update(torch.from_numpy(xs), torch.from_numpy(ys), precision)
    return acc


def _reference(x, y):
    xc, yc = x - x.mean(0), y - y.mean(0)
    return xc.T @ xc, xc.T @ yc, (yc**2).sum(0)


@pytest.mark.parametrize("row_block, row_chunk", [(1, 1024), (5, 7), (7, 1024), (16, 100), (256, 1)])
def test_upper_block_triangle_gives_the_full_moments(monkeypatch, row_block, row_chunk):
    """Row blocks and row chunks that do and do not divide the sizes all rebuild the symmetric Sxx and Sxy."""
    monkeypatch.setattr(stats_mod, "ROW_BLOCK", row_block)
    monkeypatch.setattr(stats_mod, "ROW_CHUNK", row_chunk)
    x, y, _, _ = planted(900, d=16, k=12)
    acc = _accumulate(x, y, chunks=4)
    sxx, sxy, syy = _reference(x, y)
    np.testing.assert_allclose(acc.sxx, sxx, rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(acc.sxx, acc.sxx.T)
    np.testing.assert_allclose(acc.sxy, sxy, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(acc.syy, syy, rtol=1e-10)
    np.testing.assert_allclose(acc.mx, x.mean(0), atol=1e-12)


def test_merge_re_shifts_and_keeps_the_moments(monkeypatch):
    """Merging accumulators with different shifts (and into an empty one) equals one pass."""
    monkeypatch.setattr(stats_mod, "ROW_BLOCK", 5)
    x, y, _, _ = planted(1200, d=16, k=12)
    x = x + 50.0 * np.arange(1200)[:, None] / 1200  # a drifting mean: the shifts differ
    left, right = _accumulate(x[:500], y[:500], 3), _accumulate(x[500:], y[500:], 2)
    merged = MomentAccumulator(16, 12).merge(left).merge(right)
    merged.update(torch.from_numpy(x[:10]), torch.from_numpy(y[:10]))  # still updatable after a merge
    sxx, sxy, syy = _reference(np.vstack([x, x[:10]]), np.vstack([y, y[:10]]))
    np.testing.assert_allclose(merged.sxx, sxx, rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(merged.sxy, sxy, rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(merged.syy, syy, rtol=1e-9)
    assert merged.n == 1210


def test_float32_products_keep_a_large_mean_from_costing_digits():
    """The shift is subtracted before the float32 product, so a mean of 1e4 loses nothing."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(4000, 8)) + 1e4).astype(np.float32).astype(np.float64)
    y = rng.normal(size=(4000, 3))
    acc = _accumulate(x, y, chunks=5, precision="float32")
    sxx, sxy, syy = _reference(x, y)
    np.testing.assert_allclose(acc.sxx, sxx, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(acc.sxy, sxy, atol=1e-3 * np.sqrt(np.outer(np.diag(sxx), syy)).max())
    np.testing.assert_allclose(acc.syy, syy, rtol=1e-5)


def ill_conditioned(n, spread, d=48, k=16, seed=0):
    """LayerNorm rows (an exact null direction) scaled over 10^spread and rotated: float32-exact inputs whose
    weak directions are dense, not axis-aligned, and carry signal; cond(Sxx) on the kept subspace ≈ 10^spread."""
    rng = np.random.default_rng(seed)
    z = layernorm_rows(n, d, seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = (z * 10 ** rng.uniform(-spread / 2, 0, d)) @ q
    y = np.tanh(z @ rng.normal(size=(d, k)) / 3) + 0.05 * rng.normal(size=(n, k))
    return x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)


def _score(x, y, n_train, precision, one_pass, batch=4096) -> dict:
    d_in, d_out = x.shape[1], y.shape[1]
    stats = FitThenScore(d_in, d_out, precision) if one_pass else GroupMoments(d_in, d_out, 2, precision)
    for start in range(0, len(x), batch):  # the last train batch also holds the first held-out rows
        stop = min(start + batch, len(x))
        for group, lo, hi in ((0, start, min(stop, n_train)), (1, max(start, n_train), stop)):
            if lo < hi:
                stats.update(group, torch.from_numpy(x[lo:hi]).float(), torch.from_numpy(y[lo:hi]).float())
    return stats.finalize() if one_pass else BlockStats(*stats.groups).finalize()


@pytest.mark.parametrize(
    "spread, one_pass, tol", [(6, False, 1e-6), (8, False, 5e-6), (6, True, 1e-7), (8, True, 1e-7)]
)
def test_mixed_precision_matches_lstsq_on_ill_conditioned_inputs(spread, one_pass, tol):
    """Gram float64 + cross float32 keeps lstsq's answer at cond 2e6 and 1e8 (measured: moments 8e-8 and 5e-7,
    one pass 8e-10 and 3e-9); at cond 1e8 float32 Grams lose it (measured 1e-3 and 6e-5)."""
    x, y = ill_conditioned(40_000, spread)
    ref = lstsq_r2(x[:30_000], y[:30_000], x[30_000:], y[30_000:])[0]
    assert abs(_score(x, y, 30_000, "mixed", one_pass)["r2_lin"] - ref) <= tol
    assert abs(_score(x, y, 30_000, "float64", one_pass)["r2_lin"] - ref) <= 1e-9
    if spread == 8:  # the case is a hard one: all-float32 products miss by far more
        assert abs(_score(x, y, 30_000, "float32", one_pass)["r2_lin"] - ref) > 1e-5


def test_one_pass_scoring_equals_held_out_moments_and_keeps_no_held_out_gram():
    x, y = ill_conditioned(6000, spread=3)
    one_pass, moments = _score(x, y, 4500, "float64", True, batch=1000), _score(x, y, 4500, "float64", False, 1000)
    for key in ("r2_lin", "r2_lin_global", "r2_median_dim", "cond"):
        assert one_pass[key] == pytest.approx(moments[key], rel=1e-10, abs=1e-12)
    assert (one_pass["n_train"], one_pass["n_test"], one_pass["rank"]) == (4500, 1500, moments["rank"])
    sink = FitThenScore(48, 16, "mixed")
    sink.update(0, torch.from_numpy(x[:100]).float(), torch.from_numpy(y[:100]).float())
    sink.update(1, torch.from_numpy(x[100:200]).float(), torch.from_numpy(y[100:200]).float())
    assert sink.train is None and sink.fit is not None  # the train Gram is freed once the map is fitted
    assert not [v for v in vars(sink.heldout).values() if getattr(v, "ndim", 0) == 2 and v.shape[0] == v.shape[1]]
    with pytest.raises(RuntimeError, match="train row arrived after held-out"):
        sink.update(0, torch.from_numpy(x[:10]).float(), torch.from_numpy(y[:10]).float())


#: max |ΔR²| of float32 against float64 products on the tiny models: measured 3e-8 (gpt_neox), 1.2e-7 (gpt2).
FLOAT32_R2_TOLERANCE = 1e-6


@pytest.mark.parametrize("precision", ["mixed", "float32"])
@pytest.mark.parametrize("model_type", ["gpt_neox", "gpt2"])
def test_cheaper_products_stay_within_the_stated_error_of_float64(model_type, precision, text_file, tokenizer):
    windows = eval_tokens(DataSpec("text", str(text_file), tokens=4096, seq_len=64), tokenizer)
    model = tiny_model(model_type)
    r64 = measure_blocks(model, windows, MetricConfig(compute_dtype="float64", batch_tokens=1024))
    cheap = measure_blocks(model, windows, MetricConfig(compute_dtype=precision, batch_tokens=1024))
    err = max(abs(a[k] - b[k]) for a, b in zip(r64, cheap) for k in ("r2_lin", "r2_lin_global"))
    assert err <= FLOAT32_R2_TOLERANCE
    assert MetricConfig(compute_dtype=precision).digest() != MetricConfig(compute_dtype="float64").digest()


def test_rows_are_chunked_on_the_cpu_only():
    """CPU batches are multiplied ROW_CHUNK rows at a time (bounded copies); an accelerator's batch goes whole."""
    assert stats_mod.row_chunks(2500, torch.device("cpu")) == [slice(0, 1024), slice(1024, 2048), slice(2048, 3072)]
    assert stats_mod.row_chunks(2500, torch.device("cuda")) == [slice(0, 2500)]
    assert stats_mod.row_chunks(0, torch.device("cpu")) == []
