"""Companion metrics at some steps only (``[metric] companion_points``), R²_lin at every step."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from builders import run_arm, stdlib_text

from trajectory.config import MetricConfig
from trajectory.manifest import load_manifest
from trajectory.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_chosen_steps_are_spread_evenly_with_the_first_and_the_last():
    cfg = MetricConfig(companions=("linearity_score",), companion_points=4)
    chosen = [i for i in range(10) if cfg.at(i, 10).companions]
    assert chosen == [0, 3, 6, 9]
    assert all(cfg.at(i, 3).companions for i in range(3))  # fewer steps than points: every step
    plain = MetricConfig()
    assert cfg.at(1, 10) == MetricConfig(companions=()) and cfg.at(1, 10).digest() == plain.digest()
    assert cfg.digest() == MetricConfig(companions=("linearity_score",)).digest()  # the count is not hashed
    assert cfg.core().digest() == plain.digest() != cfg.digest()
    with pytest.raises(ValueError, match="companion_points"):
        MetricConfig(companion_points=-1)


def _manifest(folder: Path, tiny_dir: Path, eval_file: Path, points: int) -> Path:
    train = folder / "train.txt"
    train.write_text(stdlib_text(1_000_000)[400_000:], encoding="utf-8")  # disjoint from the eval text
    path = folder / "cp.toml"
    path.write_text(f"""
[experiment]
name = "cp"
arms = ["random-init", "twin"]
[model]
tokenizer = "{tiny_dir}"
[model.config]
model_type = "gpt_neox"
vocab_size = 320
hidden_size = 32
num_hidden_layers = 2
num_attention_heads = 4
intermediate_size = 128
max_position_embeddings = 256
[schedule]
rule = "dense"
log_until = 2
points = 4
last = 12
[data]
text_file = "{eval_file}"
tokens = 2048
seq_len = 64
[metric]
companions = ["linearity_score"]
companion_points = {points}
[random_init]
seeds = 2
[twin]
steps = 12
batch_tokens = 256
seq_len = 64
seeds = [0]
train_data = "text:{train}"
[sweep]
store = "{folder / "store"}"
""")
    return path


def test_a_twin_measures_companions_at_the_chosen_steps_and_its_r2_at_every_step(tmp_path, tiny_dir, text_file):
    from trajectory.plots.companions import companion_steps
    from trajectory.verdicts import one_evaluation
    from trajectory.verify import verify_store

    manifest = load_manifest(_manifest(tmp_path, tiny_dir, text_file, points=2))
    assert {o.status for o in run_arm(manifest, "twin") + run_arm(manifest, "random-init")} == {"done"}
    rows = Store(manifest.store_dir).read()
    twin = rows.filter(pl.col("arm") == "twin")
    steps = sorted(set(twin["step"]))
    with_companions = twin.filter(pl.col("linearity_score").is_not_null())
    assert steps == [0, 1, 2, 4, 7, 10, 12]  # 2 + k · 10/4 rounded half to even and sorted(set(with_companions["step"])) == [0, 12]
    assert twin["r2_lin"].is_not_null().all() and twin["metric_core"].n_unique() == 1
    assert (with_companions["metric_config"] != with_companions["metric_core"]).all()
    plain = twin.filter(pl.col("linearity_score").is_null())
    assert (plain["metric_config"] == plain["metric_core"]).all()
    assert rows.filter(pl.col("arm") == "random-init")["linearity_score"].is_not_null().all()  # every seed
    kept, aside = one_evaluation(rows)
    assert kept.height == rows.height and aside.is_empty()  # one evaluation: R²_lin comparable throughout
    assert companion_steps(rows, "twin") == {0, 12}
    assert verify_store(manifest.store_dir, manifest).ok
