"""The probe on tiny models of every supported family, against numpy lstsq on stored activations."""

import numpy as np
import pytest
import torch
from builders import tiny_model
from test_stats import lstsq_r2

from trajectory.config import DataSpec, MetricConfig
from trajectory.data.tokens import eval_tokens
from trajectory.engine.measure import measure_blocks, split_by_document, split_by_sequence

# Independent of trajectory.adapters: where each family's FFN input and output are.
FFN_SITES = {
    "gpt_neox": lambda m: [(b.mlp, b.mlp) for b in m.gpt_neox.layers],
    "gpt2": lambda m: [(b.mlp, b.mlp) for b in m.transformer.h],
    "llama": lambda m: [(b.mlp, b.mlp) for b in m.model.layers],
    "qwen2": lambda m: [(b.mlp, b.mlp) for b in m.model.layers],
    "mistral": lambda m: [(b.mlp, b.mlp) for b in m.model.layers],
    "olmo": lambda m: [(b.mlp, b.mlp) for b in m.model.layers],
    # OLMo-2: x is the residual stream after attention (no norm precedes the MLP), y the MLP's output before
    # its post-feed-forward RMSNorm (test_olmo2_x_is_the_residual_stream_and_y_precedes_its_output_norm)
    "olmo2": lambda m: [(b.mlp, b.mlp) for b in m.model.layers],
    "bert": lambda m: [(b.intermediate, b.output.dense) for b in m.encoder.layer],
    # BLOOM: the MLP adds the residual inside its forward, so y is the down-projection's output (before the add)
    "bloom": lambda m: [(b.mlp, b.mlp.dense_4h_to_h) for b in m.transformer.h],
}


@pytest.fixture(scope="module")
def windows(text_file, tokenizer):
    return eval_tokens(DataSpec("text", str(text_file), tokens=4096, seq_len=64), tokenizer)


def stored_activations(model, model_type, ids):
    """Every block's full (x, y) for every window, kept in memory: the naive method."""
    sites = FFN_SITES[model_type](model)
    xs, ys = [[] for _ in sites], [[] for _ in sites]
    hooks = []
    for i, (m_in, m_out) in enumerate(sites):
        hooks.append(m_in.register_forward_pre_hook(lambda m, a, i=i: xs[i].append(a[0].double())))
        hooks.append(m_out.register_forward_hook(lambda m, a, o, i=i: ys[i].append(o.double())))
    with torch.no_grad():
        model(input_ids=torch.as_tensor(ids))
    for h in hooks:
        h.remove()
    return [(torch.cat(x).numpy(), torch.cat(y).numpy()) for x, y in zip(xs, ys)]


@pytest.mark.parametrize("model_type", sorted(FFN_SITES))
def test_every_block_matches_lstsq_on_stored_activations(model_type, windows):
    model = tiny_model(model_type)
    cfg = MetricConfig(heldout_frac=0.25, seed=3)
    got = measure_blocks(model, windows, cfg)
    is_test = split_by_document(windows, cfg)
    acts = stored_activations(model, model_type, windows.ids)
    assert len(got) == len(acts) == 2
    for block, (x, y) in zip(got, acts):
        d = x.shape[-1]
        ref, ref_global = lstsq_r2(
            x[~is_test].reshape(-1, d), y[~is_test].reshape(-1, d), x[is_test].reshape(-1, d), y[is_test].reshape(-1, d)
        )
        assert block["r2_lin"] == pytest.approx(ref, abs=1e-6)
        assert block["r2_lin_global"] == pytest.approx(ref_global, abs=1e-6)
        assert block["n_test"] == is_test.sum() * windows.ids.shape[1]
        # held-out documents the fit never saw: a tiny random model can score below 0 there (OLMo-2: −0.07)
        assert -1.0 < block["r2_lin"] < 1.0 and block["status"] == "ok"


def test_no_heldout_token_comes_from_a_train_sequence(windows):
    """The held-out accumulator's mean input is the mean over held-out windows only."""
    from trajectory.engine.adapters import adapter_for
    from trajectory.engine.probe import FFNProbe

    model = tiny_model("gpt_neox")
    cfg = MetricConfig(seed=11)
    is_test = split_by_document(windows, cfg)
    assert 0 < is_test.sum() < len(is_test)
    probe = FFNProbe(model, adapter_for("gpt_neox"))
    probe.run(windows.ids, is_test, batch_size=5)
    stats = probe.stats
    (x, _), _ = stored_activations(model, "gpt_neox", windows.ids)
    np.testing.assert_allclose(stats[0].test.mx, x[is_test].reshape(-1, 32).mean(0), atol=1e-10)
    np.testing.assert_allclose(stats[0].train.mx, x[~is_test].reshape(-1, 32).mean(0), atol=1e-10)


def test_split_is_by_sequence_seeded_and_deterministic():
    a = split_by_sequence(100, MetricConfig(seed=1))
    assert a.sum() == 20 and (a == split_by_sequence(100, MetricConfig(seed=1))).all()
    assert not (a == split_by_sequence(100, MetricConfig(seed=2))).all()
    tail = split_by_sequence(100, MetricConfig(split="tail"))
    assert tail[80:].all() and not tail[:80].any()


@pytest.mark.parametrize("precision, tol", [("float64", 1e-9), ("mixed", 1e-7)])
def test_one_batch_or_many_gives_the_same_numbers(windows, precision, tol):
    """Exact up to float64 rounding; float32 cross products round differently per batch (measured 3e-9 here)."""
    model = tiny_model("gpt_neox")
    one = measure_blocks(model, windows, MetricConfig(batch_tokens=windows.n_tokens, compute_dtype=precision))
    many = measure_blocks(model, windows, MetricConfig(batch_tokens=64 * 3, compute_dtype=precision))
    for a, b in zip(one, many):
        for key in ("r2_lin", "r2_lin_global", "r2_median_dim"):
            assert a[key] == pytest.approx(b[key], abs=tol)


def test_nonfinite_activations_flag_the_row_instead_of_a_number(windows):
    model = tiny_model("gpt_neox")
    with torch.no_grad():
        model.gpt_neox.layers[1].mlp.dense_4h_to_h.bias[0] = float("inf")
    got = measure_blocks(model, windows, MetricConfig())
    assert got[0]["status"] == "ok"
    assert got[1]["status"] == "nonfinite activations" and np.isnan(got[1]["r2_lin"])


def test_olmo2_x_is_the_residual_stream_and_y_precedes_its_output_norm(windows):
    """OLMo-2's block is h'' = h' + norm₂(mlp(h')) with h' = h + norm₁(attn(h)): the probed x is h' (not
    normed) and the probed y is mlp(h') (before norm₂), as the adapter table's docstring says."""
    model = tiny_model("olmo2")
    block = model.model.layers[1]
    seen = {}
    hooks = [
        block.register_forward_pre_hook(lambda m, a: seen.__setitem__("h", a[0])),
        block.register_forward_hook(lambda m, a, o: seen.__setitem__("out", o[0] if isinstance(o, tuple) else o)),
        block.post_attention_layernorm.register_forward_hook(lambda m, a, o: seen.__setitem__("attn", o)),
    ]
    ids = windows.ids[:2]
    with torch.no_grad():
        model(input_ids=torch.as_tensor(ids))
        x, y = stored_activations(model, "olmo2", ids)[1]
        normed_y = block.post_feedforward_layernorm(torch.as_tensor(y).float()).double().numpy()
    for h in hooks:
        h.remove()
    np.testing.assert_allclose(x, (seen["h"] + seen["attn"]).double().numpy(), atol=1e-5)
    np.testing.assert_allclose(seen["out"].double().numpy(), x + normed_y, atol=1e-5)
    assert np.abs(normed_y - y).max() > 1e-2  # y is not what the add receives: the output norm lies between


def test_windows_without_variation_give_a_status_never_null_with_ok(tokenizer):
    """One token id everywhere (what an empty tokenizer's all-EOS windows are): block 0's FFN input, hence its
    output, is the same row every time, so SST = 0 and R² is undefined; the row says so instead of 'ok'."""
    import trajectory as tj
    from trajectory.data.tokens import from_ids

    model = tiny_model("gpt_neox")
    got = measure_blocks(model, from_ids(np.full((32, 64), 7), 64), MetricConfig())
    assert not np.isfinite(got[0]["r2_lin"]) and got[0]["status"].startswith("undefined R²")
    frame = tj.measure(model, tokens=np.full(32 * 64, 7), seq_len=64)  # the API's rows: null only beside a reason
    assert frame.filter(frame["r2_lin"].is_null() & (frame["status"] == "ok")).is_empty()
    assert frame["r2_lin"].null_count() >= 1


def test_measure_blocks_runs_in_eval_mode_and_restores_every_training_flag(windows):
    """Dropout 0.1 stays off while measuring (the numbers equal those of the model in eval mode) and every
    module's own flag is back afterwards, also when the measurement raises (issue 15, item 8)."""
    from trajectory.data.tokens import from_ids
    from trajectory.errors import DataError

    model = tiny_model("gpt_neox", hidden_dropout=0.1, attention_dropout=0.1).train()
    model.gpt_neox.layers[0].mlp.eval()  # a caller's own mix of modes
    flags = {name: m.training for name, m in model.named_modules()}
    got = measure_blocks(model, windows, MetricConfig())
    assert {name: m.training for name, m in model.named_modules()} == flags
    with pytest.raises(DataError, match="outside the model's 320 embeddings"):
        measure_blocks(model, from_ids(np.full((8, 64), 320), 64), MetricConfig())
    assert {name: m.training for name, m in model.named_modules()} == flags
    want = measure_blocks(model.eval(), windows, MetricConfig())
    assert [r["r2_lin"] for r in got] == [r["r2_lin"] for r in want]


def test_a_tokenizer_that_maps_text_to_almost_nothing_is_refused(tokenizer, text_file):
    """Rule (trajectory.data.tokens.check_tokenizer_output): < 1 token per 50 characters, or < 16 distinct ids
    over ≥ 64 tokens.  An empty tokenizer and one that maps every word to one unknown id are refused; the tests'
    BPE passes."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from trajectory.data.tokens import split_documents
    from trajectory.data.tokens import windows as cut
    from trajectory.errors import DataError

    docs = split_documents(text_file.read_text())
    unk = Tokenizer(models.WordLevel({"[UNK]": 0, "<eos>": 1}, unk_token="[UNK]"))
    unk.pre_tokenizer = pre_tokenizers.Whitespace()
    unknown = PreTrainedTokenizerFast(tokenizer_object=unk, eos_token="<eos>")
    with pytest.raises(DataError, match=r"to only 1 distinct ids \(fewer than 16\)"):
        cut(docs, unknown, 1024, 64)

    class Empty:  # what transformers builds for a folder without tokenizer files: every text maps to no ids
        eos_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": []}

    with pytest.raises(DataError, match=r"to 0 tokens \(fewer than 1 per 50\)"):
        cut(docs, Empty(), 1024, 64)
    assert cut(docs, tokenizer, 1024, 64).ids.shape == (16, 64)
