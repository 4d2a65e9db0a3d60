"""Random-init baselines: the family's real init, distinct seeds of one architecture, cached units."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from builders import LLAMA_LIKE, run_arm, tiny_config

from trajectory.arms import random_init as baselines
from trajectory.engine.initialisation import gpt_neox_stds
from trajectory.engine.models import fresh_model, weights_hash
from trajectory.manifest import load_manifest
from trajectory.store import Store

NEOX = dict(
    model_type="gpt_neox",
    vocab_size=320,
    hidden_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=512,
    max_position_embeddings=256,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(**kw):
    from transformers import AutoConfig

    cfg = {**NEOX, **kw}
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def test_gpt_neox_init_matches_small_and_wang_init_within_5_percent():
    cfg = _config()
    model = fresh_model(cfg, seed=3, with_head=True)
    small, wang = gpt_neox_stds(cfg.hidden_size, cfg.num_hidden_layers)
    assert not math.isclose(small, 0.02, rel_tol=0.2) and not math.isclose(wang, 0.02, rel_tol=0.2)
    seen = {"small": 0, "wang": 0, "norm": 0, "bias": 0}
    for name, p in model.named_parameters():
        if "layernorm" in name or "layer_norm" in name:
            expect = 1.0 if name.endswith("weight") else 0.0
            assert torch.all(p == expect), name
            seen["norm"] += 1
        elif name.endswith("bias"):
            assert torch.all(p == 0), name
            seen["bias"] += 1
        else:
            group = "wang" if name.endswith(("attention.dense.weight", "dense_4h_to_h.weight")) else "small"
            target = wang if group == "wang" else small
            std = p.double().std().item()
            assert abs(std / target - 1) < 0.05, (name, std, target)
            assert abs(p.double().mean().item()) < 3 * target / math.sqrt(p.numel()) + 1e-12, name
            seen[group] += 1
    # embed_in, embed_out, and per layer QKV + dense_h_to_4h (small); attention.dense + dense_4h_to_h (wang)
    assert seen["small"] == 2 + 2 * cfg.num_hidden_layers and seen["wang"] == 2 * cfg.num_hidden_layers
    assert seen["norm"] > 0 and seen["bias"] > 0


@pytest.mark.parametrize("model_type", ["gpt_neox", "gpt2"])
def test_seeds_are_pure_distinct_and_leave_the_global_rng_alone(model_type):
    kw = {} if model_type == "gpt_neox" else dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=64)
    cfg = _config(**kw) if kw else _config(hidden_size=32, intermediate_size=128)
    before = torch.random.get_rng_state()
    hashes = [weights_hash(fresh_model(cfg, seed)) for seed in (0, 1, 0)]
    assert torch.equal(before, torch.random.get_rng_state())
    assert hashes[0] == hashes[2] and hashes[0] != hashes[1]


@pytest.mark.parametrize("model_type", LLAMA_LIKE)
def test_llama_like_families_draw_the_hugging_face_default_init(model_type, tmp_path, tiny_dir, text_file):
    """Their adapters name no real init (``init=None``), so a seed is the model's own ``from_config`` draw
    under ``torch.manual_seed(seed)``: every projection N(0, initializer_range), and the arm stores it."""
    cfg = tiny_config(model_type, hidden_size=128, intermediate_size=512)
    model = fresh_model(cfg, seed=3)
    projections = [(n, p) for n, p in model.named_parameters() if n.endswith("proj.weight")]
    assert len(projections) == 7 * cfg.num_hidden_layers  # q, k, v, o, gate, up, down per block
    for name, p in projections:
        assert abs(p.double().std().item() / cfg.initializer_range - 1) < 0.05, name
    small = {k: v for k, v in tiny_config(model_type).to_dict().items() if k in _ARCH_KEYS}
    manifest = load_manifest(_manifest(tmp_path, tiny_dir, text_file, seeds=(0, 1), config=small))
    store = Store(manifest.store_dir)
    assert [o.status for o in run_arm(manifest, "random-init", store)] == ["done"] * 2
    rows = store.read()
    assert set(rows["commit"].str.split("/").list.first()) == {"init:hf-default"}
    from transformers import AutoModel

    for seed in (0, 1):
        torch.manual_seed(baselines.band_seed(seed))  # the draw, made here independently of engine.models
        expected = weights_hash(AutoModel.from_config(baselines.architecture(manifest)))
        assert set(rows.filter(rows["seed"] == seed)["weights_hash"]) == {expected}
    assert rows.filter(rows["status"] == "ok").height == 4  # two seeds × two blocks, each with a number


_ARCH_KEYS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "max_position_embeddings", "pad_token_id", "bos_token_id", "eos_token_id",
)  # fmt: skip


def _manifest(tmp_path, tiny_dir, text_file, seeds=(0, 1, 2), config=None) -> Path:
    path = tmp_path / "ri.toml"
    config = "\n".join(
        f"{k} = {v!r}".replace("'", '"')
        for k, v in (config or {**NEOX, "hidden_size": 32, "intermediate_size": 128}).items()
    )
    path.write_text(f"""
[experiment]
name = "ri"
arms = ["random-init"]
[model]
tokenizer = "{tiny_dir}"
[model.config]
{config}
[data]
text_file = "{text_file}"
tokens = 4096
seq_len = 64
[random_init]
seeds = {list(seeds)}
[sweep]
store = "{tmp_path / "store"}"
""")
    return path


def test_random_init_rows_carry_arm_and_seed_and_are_cached(tmp_path, tiny_dir, text_file, monkeypatch):
    manifest = load_manifest(_manifest(tmp_path, tiny_dir, text_file))
    store = Store(manifest.store_dir)
    outcomes = run_arm(manifest, "random-init", store)
    assert [o.status for o in outcomes] == ["done"] * 3
    rows = store.read()
    assert rows.height == 3 * 3  # three seeds × three blocks
    assert set(rows["arm"]) == {"random-init"} and sorted(set(rows["seed"])) == [0, 1, 2]
    assert set(rows["step"]) == {0} and set(rows["revision"]) == {"init"}
    assert rows["commit"].n_unique() == 1  # one architecture
    assert rows["weights_hash"].n_unique() == 3  # distinct weights per seed
    per_seed = rows.filter(rows["block"] == 0).sort("seed")["r2_lin"].to_list()
    assert len(set(per_seed)) == 3 and all(0.0 < r < 1.0 for r in per_seed)
    # The stored numbers are those of measuring the seed's model directly.
    tokens = baselines.eval_tokens(manifest.data, baselines.manifest_tokenizer(manifest))
    direct = baselines.measure_seed(manifest, baselines.architecture(manifest), 1, tokens)
    stored = rows.filter(rows["seed"] == 1).sort("block")["r2_lin"].to_list()
    assert stored == pytest.approx([b["r2_lin"] for b in direct], abs=1e-12)

    monkeypatch.setattr(baselines, "measure_seed", lambda *a, **k: pytest.fail("re-measured a cached seed"))
    assert [o.status for o in run_arm(manifest, "random-init", store)] == ["cached"] * 3


def test_inline_config_without_tokenizer_is_one_line_error(tmp_path, tiny_dir, text_file):
    path = _manifest(tmp_path, tiny_dir, text_file)
    path.write_text(path.read_text().replace(f'tokenizer = "{tiny_dir}"\n', ""))
    from trajectory.errors import TrajectoryError

    with pytest.raises(TrajectoryError, match="needs 'tokenizer'"):
        run_arm(load_manifest(path), "random-init", Store(tmp_path / "s"))
