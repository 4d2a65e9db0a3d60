"""The token_tail companion and `trajectory tokens`: against numpy on stored activations, and on a planted
model whose non-linearity sits on known token ids."""

import math

import numpy as np
import pytest
import torch
from builders import tiny_model
from test_engine import stored_activations

from trajectory.config import DataSpec, MetricConfig
from trajectory.data.tokens import eval_tokens, from_ids
from trajectory.engine.adapters import adapter_for
from trajectory.engine.measure import measure_blocks, sinks_for, split_by_sequence
from trajectory.engine.probe import FFNProbe
from trajectory.engine.tokentail import BINS_PER_OCTAVE, LogHistogram, Reservoir, dkw_epsilon

RHO = 2 ** (1 / BINS_PER_OCTAVE) - 1  # the histogram's stated relative error on a tail share


@pytest.fixture(scope="module")
def windows(text_file, tokenizer):
    return eval_tokens(DataSpec("text", str(text_file), tokens=4096, seq_len=64), tokenizer)


def numpy_shares(x, y, is_test):
    """Per held-out row: ‖r_t‖², s_t and whether it is position 0, from numpy lstsq on stored activations."""
    d, seq = x.shape[-1], x.shape[1]
    xtr, ytr = x[~is_test].reshape(-1, d), y[~is_test].reshape(-1, d)
    xte, yte = x[is_test].reshape(-1, d), y[is_test].reshape(-1, d)
    beta = np.linalg.lstsq(np.hstack([xtr, np.ones((len(xtr), 1))]), ytr, rcond=1e-6)[0]
    q = ((yte - np.hstack([xte, np.ones((len(xte), 1))]) @ beta) ** 2).sum(1)
    s = q / ((yte - yte.mean(0)) ** 2).sum(1)
    first = np.arange(len(q)) % seq == 0
    return q, s, first


def top_share(q, frac):
    k = math.ceil(frac * len(q))
    return np.sort(q)[::-1][:k].sum() / q.sum()


def test_token_tail_matches_numpy_on_stored_activations(windows):
    """Every class is kept whole here (≤ SAMPLE rows), so quantiles are exact; tail shares within ρ − 1."""
    model = tiny_model("gpt_neox")
    cfg = MetricConfig(heldout_frac=0.25, seed=3, companions=("token_tail",))
    got = measure_blocks(model, windows, cfg)
    is_test = split_by_sequence(windows.ids.shape[0], cfg)
    for row, (x, y) in zip(got, stored_activations(model, "gpt_neox", windows.ids)):
        q, s, first = numpy_shares(x, y, is_test)
        for prefix, mask in (("token_tail", slice(None)), ("token_tail_pos0", first), ("token_tail_rest", ~first)):
            for key, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
                ref = np.quantile(s[mask], p, method="inverted_cdf")
                assert row[f"{prefix}_{key}"] == pytest.approx(ref, rel=1e-4)
            assert row[f"{prefix}_max"] == pytest.approx(s[mask].max(), rel=1e-4)
            for key, f in (("top1", 0.01), ("top10", 0.1)):
                assert row[f"{prefix}_{key}"] == pytest.approx(top_share(q[mask], f), rel=RHO + 1e-4)
        assert row["token_tail_pos0_sse"] == pytest.approx(q[first].sum() / q.sum(), rel=1e-4)
        assert row["status_token_tail"] == "ok"


def test_sse_shares_sum_to_the_blocks_sse(windows):
    cfg = MetricConfig(heldout_frac=0.25, seed=3, companions=("token_tail",))
    model = tiny_model("gpt_neox")
    probe = FFNProbe(model, adapter_for("gpt_neox"), sinks_for(cfg, 2, windows.ids.shape[1]))
    probe.run(windows.ids, split_by_sequence(windows.ids.shape[0], cfg), 16)
    for sink in probe.accumulators["ffn"]:
        tail, sse = sink.heldout.tail, float(sink.heldout._sse.sum())
        assert tail.hist["pos0"].sum + tail.hist["rest"].sum == pytest.approx(sse, rel=1e-9)
        row = sink.token_tail()
        assert row["token_tail_pos0_sse"] * sse + tail.hist["rest"].sum == pytest.approx(sse, rel=1e-9)


def test_reservoir_quantiles_lie_within_the_dkw_rank_bound():
    """A 256-row sample of 20,000 heavy-tailed values: each quantile's rank lies within the DKW ε (α = 1e-3)."""
    rng = np.random.default_rng(5)
    values = rng.lognormal(0.0, 2.0, 20_000)
    res = Reservoir(256, 1, np.random.default_rng(9))
    for chunk in np.array_split(values, 37):
        res.update(chunk, torch.zeros(len(chunk), 1))
    eps = dkw_epsilon(256, alpha=1e-3)
    sample = res.q
    assert len(set(sample.tolist())) == 256 and set(sample.tolist()) <= set(values.tolist())
    for p in (0.5, 0.9, 0.99):
        rank = (values <= np.quantile(sample, p, method="inverted_cdf")).mean()
        assert abs(rank - p) <= eps


def test_histogram_tail_share_is_within_its_stated_bound():
    values = np.random.default_rng(2).pareto(1.5, 50_000)
    hist = LogHistogram()
    for chunk in np.array_split(values, 9):
        hist.update(chunk)
    assert hist.sum == pytest.approx(values.sum(), rel=1e-12)
    for f in (0.01, 0.1, 0.37):
        assert hist.top_share(f) == pytest.approx(top_share(values, f), rel=RHO)


PLANTED = (17, 42, 99)


def planted_model():
    """A 1-block GPT-NeoX whose attention writes nothing, so the FFN sees LN(embedding of the token) alone, and
    whose FFN is linear except for a bump on the planted ids' (normed) embeddings."""
    model = tiny_model("gpt_neox", num_hidden_layers=1)
    block = model.gpt_neox.layers[0]
    with torch.no_grad():
        block.attention.dense.weight.zero_()
        block.attention.dense.bias.zero_()
        emb = model.gpt_neox.embed_in.weight
        centres = block.post_attention_layernorm(emb[list(PLANTED)])  # (3, d): the FFN inputs of planted ids
    block.mlp = PlantedFFN(centres, torch.Generator().manual_seed(4))
    return model


class PlantedFFN(torch.nn.Module):
    """y = A x + b + Σ_p exp(−‖x − c_p‖² / 0.01) · v_p: affine except within ~0.1 of a planted input."""

    def __init__(self, centres: torch.Tensor, gen: torch.Generator) -> None:
        super().__init__()
        d = centres.shape[1]
        self.a = torch.randn(d, d, generator=gen) / d**0.5
        self.b = torch.randn(d, generator=gen)
        self.c, self.v = centres.detach(), 5.0 * torch.randn(len(centres), d, generator=gen)

    def forward(self, x):
        bump = torch.exp(-torch.cdist(x, self.c.expand(x.shape[0], -1, -1)).square() / 0.01)  # (b, s, 3)
        return x @ self.a + self.b + bump @ self.v


def test_planted_ids_fill_the_top_and_carry_the_tail():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 320, size=(128, 32))
    ids[np.isin(ids, PLANTED)] = 5  # then plant them at a known rate: 0.5% of tokens
    where = rng.random(ids.shape) < 0.005
    ids[where] = rng.choice(PLANTED, where.sum())
    tokens = from_ids(ids, 32)
    model = planted_model()
    cfg = MetricConfig(heldout_frac=0.5, seed=0, companions=("token_tail",))
    row = measure_blocks(model, tokens, cfg)[0]
    is_test = split_by_sequence(128, cfg)
    share = np.isin(ids[is_test], PLANTED).mean()
    assert 0 < share <= 0.01 and row["token_tail_top1"] >= 0.9  # under 1% of tokens, and they carry the SSE
    assert row["token_tail_top10"] >= row["token_tail_top1"]

    import trajectory as tj

    got = tj.top_tokens(model, tokens=ids, seq_len=32, heldout_frac=0.5, block=0, top=8, min_count=2)
    assert {r["token_id"] for r in got["tokens"]} <= set(PLANTED)
    held = ids[is_test]
    seen = {p for p in PLANTED if (held == p).sum() >= 2}
    assert seen and {r["token_id"] for r in got["by_id"][: len(seen)]} == seen


def tail_frame(tmp_path):
    """The synthetic store, with a top-1% SSE share per row: block 0 of the hub arm concentrates to 0.6 by its
    last step, every other row is the random-init draws' 0.05 + 0.01·seed."""
    import polars as pl
    from synthetic import build_store, write_manifest

    from trajectory.manifest import load_manifest
    from trajectory.store import Store

    build_store(tmp_path / "store")
    manifest = load_manifest(write_manifest(tmp_path / "m.toml", tmp_path / "store"))
    frame = Store(manifest.store_dir).read()
    last = frame.filter(pl.col("arm") == "hub")["step"].max()
    hot = (pl.col("arm") == "hub") & (pl.col("block") == 0) & (pl.col("step") == last)
    value = pl.when(hot).then(0.6).otherwise(0.05 + 0.01 * (pl.col("seed") % 3))
    return manifest, frame.with_columns(token_tail_top1=value), last


def test_report_reads_tail_concentration_at_init_and_last_step(tmp_path):
    from trajectory import verdicts

    _, frame, last = tail_frame(tmp_path)
    rows = {int(r[0]): r for r in verdicts.token_tail_rows(frame, "hub")}
    assert rows[0][3] == f"0.6000 at {last}" and rows[0][4] == "more concentrated than every draw"
    assert all(r[4] == "within the draws" for b, r in rows.items() if b != 0)


def test_tail_concentration_figure_draws_the_stored_values_over_the_band(tmp_path):
    from trajectory.plots import context_from
    from trajectory.plots.companions import token_tail

    manifest, frame, last = tail_frame(tmp_path)
    drawn = token_tail(frame, context_from(manifest, frame), tmp_path / "figs", "hub")
    assert drawn.name == "token_tail" and all(p.exists() for p in drawn.paths)
    hub = drawn.data["trained"].filter((drawn.data["trained"]["arm"] == "hub") & (drawn.data["trained"]["block"] == 0))
    assert hub.sort("step")["value"][-1] == 0.6
    assert token_tail(frame.drop("token_tail_top1"), context_from(manifest, frame), tmp_path / "f2", "hub") is None
