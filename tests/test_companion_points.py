"""Companion metrics at some steps only (``[metric] companion_points``), R²_lin at every step."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from builders import run_arm, stdlib_text, twin_manifest

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
    return twin_manifest(
        folder / "cp.toml", tokenizer=tiny_dir, eval_file=eval_file, train_file=train, store=folder / "store",
        arms=("random-init", "twin"), schedule='rule = "dense"\nlog_until = 2\npoints = 4\nlast = 12',
        twin="steps = 12\nbatch_tokens = 256\nseeds = [0]",
        sections=f'[metric]\ncompanions = ["linearity_score"]\ncompanion_points = {points}\n[random_init]\nseeds = 2',
    )  # fmt: skip


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
    assert steps == [
        0,
        1,
        2,
        4,
        7,
        10,
        12,
    ]  # 2 + k · 10/4 rounded half to even and sorted(set(with_companions["step"])) == [0, 12]
    assert twin["r2_lin"].is_not_null().all() and twin["metric_core"].n_unique() == 1
    assert (with_companions["metric_config"] != with_companions["metric_core"]).all()
    plain = twin.filter(pl.col("linearity_score").is_null())
    assert (plain["metric_config"] == plain["metric_core"]).all()
    assert rows.filter(pl.col("arm") == "random-init")["linearity_score"].is_not_null().all()  # every seed
    kept, aside = one_evaluation(rows)
    assert kept.height == rows.height and aside.is_empty()  # one evaluation: R²_lin comparable throughout
    assert companion_steps(rows, "twin") == {0, 12}
    assert verify_store(manifest.store_dir, manifest).ok
