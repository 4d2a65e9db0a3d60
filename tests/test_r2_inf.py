"""``r2_lin_inf``: held-out R²_lin extrapolated to unlimited train rows (trajectory.engine.heldout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from builders import stdlib_text, tiny_model, tiny_tokenizer
from test_engine import stored_activations

import trajectory as tj
from trajectory.config import DataSpec, MetricConfig
from trajectory.data.tokens import eval_tokens
from trajectory.engine.heldout import FitThenScore
from trajectory.engine.measure import measure_blocks, split_by_document

pytestmark = pytest.mark.usefixtures("one_thread")


def planted(rng, n: int, d: int, k: int, quad: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """x ~ N(0, I_d); y_j = x_j + quad·(x_j² − 1) + noise·ε for j < k.  For Gaussian x, x_j² − 1 is uncorrelated
    with every x_i, so the population least-squares map is y = x_j and R²_∞ = 1 / (1 + 2 quad² + noise²)."""
    x = rng.standard_normal((n, d))
    y = x[:, :k] + quad * (x[:, :k] ** 2 - 1) + noise * rng.standard_normal((n, k))
    return x, y


def one_fit(x_train, y_train, x_test, y_test) -> dict:
    sink = FitThenScore(x_train.shape[1], y_train.shape[1], precision="float64")
    sink.update(0, torch.from_numpy(x_train), torch.from_numpy(y_train))
    sink.update(1, torch.from_numpy(x_test), torch.from_numpy(y_test))
    return sink.finalize()


@pytest.mark.parametrize("quad, noise", [(0.0, 0.3), (0.5, 0.3)], ids=["linear", "misspecified"])
def test_planted_model_known_answer(quad, noise):
    """With 100 train rows for 17 parameters per output, held-out R² is biased low by several points; the mean
    of ``r2_lin_inf`` over 150 draws lands on R²_∞ (standard error of that mean ≈ 0.001)."""
    rng = np.random.default_rng(0)
    truth = 1.0 / (1.0 + 2 * quad**2 + noise**2)
    got = [one_fit(*planted(rng, 100, 16, 4, quad, noise), *planted(rng, 4000, 16, 4, quad, noise)) for _ in range(150)]
    r2 = np.mean([g["r2_lin"] for g in got])
    inf = np.mean([g["r2_lin_inf"] for g in got])
    assert truth - r2 > 0.015  # the finite-sample bias this corrects …
    assert inf == pytest.approx(truth, abs=0.005)  # … is gone
    assert all(g["r2_lin_inf"] >= g["r2_lin"] for g in got)


def test_both_measuring_paths_and_numpy_agree(text_file, tokenizer):
    """One pass (plain R²_lin) and the moment path (k-fold companions) give the same ``r2_lin_inf``, equal to the
    formula evaluated with numpy on stored activations: Σ‖e_t‖² / (1 + 1/n + h_t), h_t = (x_t − x̄)ᵀ S⁺ (x_t − x̄)."""
    model = tiny_model("gpt_neox", seed=4)
    windows = eval_tokens(DataSpec("text", str(text_file), tokens=4096, seq_len=64), tokenizer)
    plain = measure_blocks(model, windows, MetricConfig(compute_dtype="float64"))
    folds = measure_blocks(model, windows, MetricConfig(compute_dtype="float64", companions=("ci",)))
    is_test = split_by_document(windows, MetricConfig())
    x, y = stored_activations(model, "gpt_neox", windows.ids)[0]  # block 0: (n_seq, seq, d)
    xt, yt = x[~is_test].reshape(-1, 32), y[~is_test].reshape(-1, 32)
    xh, yh = x[is_test].reshape(-1, 32), y[is_test].reshape(-1, 32)
    mx = xt.mean(0)
    beta = np.linalg.lstsq(np.hstack([xt, np.ones((len(xt), 1))]), yt, rcond=1e-6)[0]
    e = yh - np.hstack([xh, np.ones((len(xh), 1))]) @ beta
    s_inv = np.linalg.pinv((xt - mx).T @ (xt - mx), rcond=1e-12)
    lev = np.einsum("ti,ij,tj->t", xh - mx, s_inv, xh - mx)
    sst = ((yh - yh.mean(0)) ** 2).sum()
    expected = 1 - ((e**2).sum(1) / (1 + 1 / len(xt) + lev)).sum() / sst
    assert plain[0]["r2_lin_inf"] == pytest.approx(expected, abs=1e-6)
    for a, b in zip(plain, folds):
        assert a["r2_lin_inf"] == pytest.approx(b["r2_lin_inf"], abs=1e-9)
        assert a["r2_lin_inf"] > a["r2_lin"]


@pytest.fixture(scope="module")
def d128():
    """Acceptance setup: a random-init GPT-NeoX (d=128, 4 blocks) and 16,384 stdlib tokens of a 512-token BPE."""
    from transformers import GPTNeoXConfig

    from trajectory.data.tokens import split_documents, windows
    from trajectory.engine.models import fresh_model

    cfg = GPTNeoXConfig(vocab_size=512, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=512, max_position_embeddings=256, eos_token_id=0, bos_token_id=0)  # fmt: skip
    text = split_documents(stdlib_text(1_200_000))
    return fresh_model(cfg, 0).eval(), windows(text, tiny_tokenizer(512), 16_384, 64, "text").ids


def test_r2_lin_inf_moves_far_less_than_r2_lin_between_2k_and_16k_tokens(d128):
    """Acceptance: from 2,048 to 16,384 evaluation tokens in 64-token windows, averaged over blocks, r2_lin_inf
    moves by at most 60% of what r2_lin moves.  The 2,048 tokens are 32 windows drawn at random from the 256 of the
    16,384 (so both budgets see the same text distribution; the first 2,048 tokens alone are other text), averaged
    over 8 draws, each with its own split seed, to average out which 6 windows are held out."""
    model, ids = d128
    big = tj.measure(model, tokens=ids, seq_len=64)
    small = [
        tj.measure(model, tokens=ids[np.sort(np.random.default_rng(100 + s).choice(256, 32, replace=False))],
                   seq_len=64, seed=s)
        for s in range(8)
    ]  # fmt: skip

    def moved(col: str) -> float:
        return float(np.mean(big[col].to_numpy() - np.mean([f[col].to_numpy() for f in small], axis=0)))

    lin, inf = moved("r2_lin"), moved("r2_lin_inf")
    assert lin > 0.005  # held-out R² rises with the train rows …
    assert abs(inf) <= 0.6 * lin, (lin, inf)  # … and the extrapolation removes most of that rise
