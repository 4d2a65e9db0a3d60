"""Compression: ablations, the greedy plan, the compressed folder, against a planted exactly-affine block.

The planted model is a tiny 3-block GPT-NeoX whose block 1 has its activation replaced by the identity (test
only), so that block's FFN is exactly affine in its input; the model is then trained briefly so that every
other FFN matters to the loss.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from builders import stdlib_text, tiny_config, tiny_model

from trajectory.compress.ablations import ablation_table
from trajectory.compress.folder import load_compressed
from trajectory.compress.run import compress_model
from trajectory.compress.spec import CompressConfig
from trajectory.data.tokens import split_documents, windows
from trajectory.engine.ablation import Ablation, ffn_cost, fit_map, map_cost, module_cost
from trajectory.engine.adapters import adapter_for
from trajectory.engine.measure import split_by_document
from trajectory.engine.stats import MomentAccumulator, fit_affine
from trajectory.errors import ConfigError, LoadError

PLANTED = 1


def train_briefly(model, ids: np.ndarray, steps: int = 120, lr: float = 3e-3, seed: int = 0):
    """AdamW on random batches of ``ids`` (enough for every FFN to matter to the loss), then eval mode."""
    gen = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = torch.as_tensor(ids[gen.choice(len(ids), 16)], dtype=torch.long)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def tokens(tokenizer):
    return windows(split_documents(stdlib_text(200_000)), tokenizer, 4096, 64, "stdlib")


@pytest.fixture(scope="module")
def planted(tokens, one_thread):
    """Trained on the evaluation windows themselves: a tiny model trained on other text for seconds is so far
    from its held-out optimum that removing an FFN can lower the loss; fitted to these windows, every FFN
    but the planted one matters (removing any costs ≥ 0.05 nats here)."""
    model = tiny_model("gpt_neox", seed=4, num_hidden_layers=3)
    model.gpt_neox.layers[PLANTED].mlp.act = torch.nn.Identity()
    return train_briefly(model, tokens.ids, steps=150, lr=3e-3)


@pytest.fixture(scope="module")
def table(planted, tokens):
    return ablation_table(planted, tokens, CompressConfig())


def heldout_ids(tokens):
    return tokens.ids[split_by_document(tokens, CompressConfig().metric)]


def test_the_planted_affine_block_is_free_and_the_others_are_not(table):
    rows = {(r["block"], r["ablation"]): r for r in table.rows}
    assert abs(rows[(PLANTED, "affine")]["dloss"]) <= 1e-6
    assert rows[(PLANTED, "affine")]["r2_lin"] == pytest.approx(1.0, abs=1e-9)
    for block in (0, 2):  # the trained, nonlinear FFNs: their affine maps cost something
        assert abs(rows[(block, "affine")]["dloss"]) > 1e-5 and rows[(block, "affine")]["r2_lin"] < 1 - 1e-4
    assert [rows[(b, "affine")]["third"] for b in range(3)] == ["lower", "middle", "upper"]


def test_the_interval_is_the_paired_t_interval_over_held_out_windows(planted, tokens, table):
    """Recomputed from transformers' own loss, window by window, with t(0.975, n−1) from tables."""
    held = heldout_ids(tokens)
    assert len(held) == 13  # round(0.2 · 64) windows: t(0.975, 12) = 2.178813 (printed tables)

    def per_window(model):
        with torch.no_grad():
            return np.array(
                [model(input_ids=torch.as_tensor(w[None]), labels=torch.as_tensor(w[None])).loss.item() for w in held]
            )

    base = per_window(planted)
    block = planted.gpt_neox.layers[0]
    removed = next(r for r in table.rows if r["block"] == 0 and r["ablation"] == "remove")
    orig = block.mlp
    block.mlp = _Zero()
    try:
        diffs = per_window(planted) - base
    finally:
        block.mlp = orig
    half = 2.178813 * diffs.std(ddof=1) / math.sqrt(len(diffs))
    assert removed["dloss"] == pytest.approx(diffs.mean(), abs=2e-6)
    assert removed["dloss_low"] == pytest.approx(diffs.mean() - half, abs=2e-6)
    assert removed["dloss_high"] == pytest.approx(diffs.mean() + half, abs=2e-6)
    assert removed["ppl_ratio"] == pytest.approx(math.exp(diffs.mean()), rel=1e-5)


class _Zero(torch.nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


def test_low_rank_at_full_rank_is_the_affine_map_and_matches_an_svd_reference():
    gen = np.random.default_rng(0)
    x = gen.normal(size=(500, 6)) @ gen.normal(size=(6, 6)) + 3.0
    y = np.tanh(x @ gen.normal(size=(6, 5))) + gen.normal(size=5)
    acc = MomentAccumulator(6, 5)
    acc.update(torch.as_tensor(x), torch.as_tensor(y), "float64")
    full = fit_affine(acc)
    top = fit_map(Ablation("rank", 5), acc)
    assert np.abs(top["u"] @ top["v"] - full.w).max() <= 1e-8
    assert np.abs(top["bias"] - full.b).max() <= 1e-8
    # reduced-rank regression, independently: the top right singular vectors of the centred fitted values
    xc = x - x.mean(0)
    b_ols = np.linalg.lstsq(xc, y - y.mean(0), rcond=None)[0]
    _, _, vt = np.linalg.svd(xc @ b_ols, full_matrices=False)
    for r in (1, 2, 3):
        ref_w = b_ols @ vt[:r].T @ vt[:r]
        got = fit_map(Ablation("rank", r), acc)
        assert np.abs(got["u"] @ got["v"] - ref_w).max() <= 1e-8
        assert np.abs(got["bias"] - (y.mean(0) - x.mean(0) @ ref_w)).max() <= 1e-8


@pytest.mark.parametrize(
    "family, ffn",
    [
        # GPT-NeoX d=32, FFN 128: dense_h_to_4h 32·128 + 128, dense_4h_to_h 128·32 + 32; FLOPs 2·(4096 + 4096)
        ("gpt_neox", (8352, 16384)),
        # Llama d=32, FFN 64, no biases: gate, up 32·64 each, down 64·32; FLOPs 2·6144
        ("llama", (6144, 12288)),
        # BERT d=32, FFN 64: intermediate.dense 32·64 + 64, output.dense 64·32 + 32; FLOPs 2·4096
        ("bert", (4192, 8192)),
    ],
)
def test_parameter_and_flop_counts_equal_hand_counts(family, ffn):
    model = tiny_model(family)
    adapter = adapter_for(family)
    cost = ffn_cost(adapter, adapter.blocks(model)[0])
    assert (cost.params, cost.flops) == ffn
    # the maps at d = 32: rank 4 has U 32·4, V 4·32, bias 32 (288; FLOPs 2·256); affine 32·32 + 32 (FLOPs 2048)
    assert (map_cost(Ablation("rank", 4), 32, 32).params, map_cost(Ablation("rank", 4), 32, 32).flops) == (288, 512)
    assert (map_cost(Ablation("affine"), 32, 32).params, map_cost(Ablation("affine"), 32, 32).flops) == (1056, 2048)
    assert (map_cost(Ablation("mean"), 32, 32).params, map_cost(Ablation("remove"), 32, 32).params) == (32, 0)


def test_a_map_module_costs_what_its_convention_says():
    from trajectory.engine.ablation import as_module

    acc = MomentAccumulator(32, 32)
    acc.update(torch.randn(200, 32, dtype=torch.float64), torch.randn(200, 32, dtype=torch.float64), "float64")
    for ab in (Ablation("rank", 4), Ablation("affine"), Ablation("mean"), Ablation("remove")):
        module = as_module(fit_map(ab, acc), torch.nn.Linear(2, 2))
        assert module_cost(module) == map_cost(ab, 32, 32)


@pytest.fixture(scope="module")
def small_plan(planted, tokens, tmp_path_factory):
    out = tmp_path_factory.mktemp("compressed") / "small"
    return compress_model(planted, tokens, CompressConfig(budget_dloss=1e-4), table=False, out=out)


def test_the_plan_picks_the_planted_block_first_and_its_logits_equal_the_intact_ones(planted, tokens, small_plan):
    assert small_plan.plan.choices[0].block == PLANTED
    assert small_plan.plan.choices[0].ablation.kind in ("affine", "rank")
    model = load_compressed(small_plan.out)
    assert [c.block for c in small_plan.plan.choices] == [PLANTED]  # within 1e-4 nats (95% upper), nothing else
    ids = torch.as_tensor(heldout_ids(tokens))
    with torch.no_grad():
        intact, compressed = planted(input_ids=ids).logits, model(input_ids=ids).logits
    assert (intact - compressed).abs().max().item() <= 1e-5
    assert type(model).__module__.startswith("transformers.")


def test_reload_reproduces_the_recorded_held_out_loss(tokens, small_plan):
    from trajectory.engine.swap import lm_loss

    model = load_compressed(small_plan.out)
    rec = small_plan.record
    assert lm_loss(model, heldout_ids(tokens), 4) == pytest.approx(rec["intact_loss"] + rec["joint"]["dloss"], abs=1e-6)
    step = rec["plan"][0]["provenance"]
    assert step["data_hash"] == tokens.data_hash and step["commit"] == rec["base"]["commit"]


def test_one_changed_byte_in_a_map_is_refused_in_one_line(small_plan, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_plan.out, copy)
    maps = copy / "maps.safetensors"
    raw = bytearray(maps.read_bytes())
    raw[-3] ^= 0x01
    maps.write_bytes(bytes(raw))
    with pytest.raises(LoadError) as err:
        load_compressed(copy)
    assert "maps.safetensors does not match the sha256" in str(err.value) and "\n" not in str(err.value)
    (copy / "extra.py").write_text("raise SystemExit")
    maps.write_bytes(bytes(small_plan.out.joinpath("maps.safetensors").read_bytes()))
    with pytest.raises(LoadError, match="does not list"):
        load_compressed(copy)


def test_budget_zero_replaces_nothing_and_a_large_one_everything_measured_jointly(planted, tokens, tmp_path):
    from trajectory.engine.swap import lm_loss

    none = compress_model(planted, tokens, CompressConfig(budget_dloss=0.0), table=False)
    assert none.plan.choices == [] and none.plan.joint["dloss"] == pytest.approx(0.0, abs=1e-12)
    every = compress_model(planted, tokens, CompressConfig(budget_dloss=50.0), table=False, out=tmp_path / "all")
    assert sorted(c.block for c in every.plan.choices) == [0, 1, 2]
    measured = lm_loss(load_compressed(tmp_path / "all"), heldout_ids(tokens), 4) - every.record["intact_loss"]
    assert every.plan.joint["dloss"] == pytest.approx(measured, abs=1e-6)
    assert every.plan.choices[-1].dloss == pytest.approx(measured, abs=1e-6)  # the last step's joint cost
    assert math.isfinite(every.plan.joint_intact_fits["dloss"])


def test_each_map_of_the_plan_is_fitted_on_the_model_compressed_so_far(planted, tokens):
    """Sequential fits: choice k's map equals the fit on moments taken with choices 1 … k−1 patched in."""
    from trajectory.compress.fitting import split_windows, train_moments
    from trajectory.engine.ablation import as_module, patched

    cfg = CompressConfig(budget_dloss=50.0)
    plan = compress_model(planted, tokens, cfg, table=False).plan
    adapter, win = adapter_for("gpt_neox"), split_windows(planted, tokens, cfg)
    blocks = adapter.blocks(planted)
    for k, choice in enumerate(plan.choices):
        before = {c.block: as_module(c.tensors, blocks[c.block]) for c in plan.choices[:k]}
        assert choice.fitted_after == tuple(before)
        with patched(adapter, planted, before):
            train = train_moments(planted, adapter, win, "float64", "cpu")[choice.block]
        for name, value in fit_map(choice.ablation, train).items():
            assert np.abs(choice.tensors[name] - value).max() <= 1e-8


def test_out_needs_a_budget_and_a_new_folder(planted, tokens, tmp_path):
    with pytest.raises(ConfigError, match="--budget-dloss"):
        compress_model(planted, tokens, CompressConfig(), out=tmp_path / "x")
    with pytest.raises(ConfigError, match="already exists"):
        compress_model(planted, tokens, CompressConfig(budget_dloss=0.1), out=tmp_path)


def test_an_encoder_is_scored_by_the_relative_error_of_its_final_hidden_states(tokens):
    model = tiny_model("bert", num_hidden_layers=2)
    model.encoder.layer[0].intermediate.intermediate_act_fn = torch.nn.Identity()
    report = ablation_table(model, tokens, CompressConfig(ranks=(4,)))
    rows = {(r["block"], r["ablation"]): r for r in report.rows}
    assert "dloss" not in rows[(0, "affine")] and not report.causal
    assert rows[(0, "affine")]["rel_error"] <= 1e-5  # exactly affine: only float32 rounding is left
    assert rows[(1, "remove")]["rel_error_low"] > 0


def test_the_config_is_checked():
    with pytest.raises(ConfigError, match="budget"):
        CompressConfig(budget_dloss=-1.0)
    with pytest.raises(ConfigError, match="ranks"):
        CompressConfig(ranks=(0,))
    assert tiny_config("gpt_neox").hidden_size == 32  # the hand counts above assume it


def test_the_cli_prints_the_table_and_the_plan_and_writes_a_folder(planted, tokenizer, text_file, tmp_path, capsys):
    from trajectory.cli import main

    model_dir = tmp_path / "trained"
    planted.save_pretrained(model_dir)  # saved with its config's GELU everywhere: block 1 is no longer planted
    tokenizer.save_pretrained(model_dir)
    args = ["compress", str(model_dir), "--text-file", str(text_file), "--tokens", "4096", "--seq-len", "64"]
    code = main([*args, "--report", "--ranks", "4", "--budget-dloss", "1.0", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "middle     1   affine" in printed and "upper     2    rank4" in printed
    assert "1. block 1 → affine" in printed and "wrote " in printed
    model = load_compressed(tmp_path / "out")
    assert (
        isinstance(model.gpt_neox.layers[1].mlp, torch.nn.Module)
        and "FFNMap" in type(model.gpt_neox.layers[1].mlp).__name__
    )
    assert main([*args, "--ranks", "4", "--budget-dloss", "0.01", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["plan"]["settings"]["budget_dloss"] == 0.01 and printed["ablations"] is None
    assert main([*args, "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trajectory: --out writes the plan's model") and err.count("\n") == 1
    assert not (tmp_path / "again").exists()


def test_the_remove_and_lowrank_companions_agree_with_the_ablation_table(planted, tokens, table):
    from trajectory.config import MetricConfig
    from trajectory.engine.measure import measure_blocks

    cfg = MetricConfig(companions=("remove", "lowrank"), compute_dtype="float64", lowrank_tol=0.02)
    rows = measure_blocks(planted, tokens, cfg)
    held = torch.as_tensor(heldout_ids(tokens))
    with torch.no_grad():
        base = planted(input_ids=held, labels=held).loss.item()
        orig, planted.gpt_neox.layers[2].mlp = planted.gpt_neox.layers[2].mlp, _Zero()
        try:
            removed = planted(input_ids=held, labels=held).loss.item() - base
        finally:
            planted.gpt_neox.layers[2].mlp = orig
    assert rows[2]["remove_dloss"] == pytest.approx(removed, abs=2e-6) and rows[2]["status_remove"] == "ok"
    for row in rows:
        ladder = [r for r in table.rows if r["block"] == row["block"] and r["ablation"].startswith("rank")]
        within = [r["rank"] for r in ladder if r["dloss"] <= 0.02]
        assert row["lowrank_rank"] == (within[0] if within else None)
    assert (
        MetricConfig(companions=("lowrank",), lowrank_tol=0.02).digest()
        != MetricConfig(companions=("lowrank",)).digest()
    )
