"""Twin variants as manifest tables: controls (random, shuffled tokens), a regulariser, the perturbation null;
each its own run with its own digest, resume and staleness."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from builders import run_arm, stdlib_text, twin_manifest

from trajectory.arms import perturb, twin
from trajectory.arms.regularisers import cosine_term, hidden_pairs
from trajectory.config import Regulariser
from trajectory.data.traindata import control_windows, train_tokens
from trajectory.manifest import load_manifest
from trajectory.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = """
[twin.variants.random]
train_data = "random"
seeds = [3]
[twin.variants.shuffled]
train_data = "shuffled:text:{train}"
seeds = [4]
[twin.variants.zero]
regulariser = {{ kind = "cosine", weight = 0.0 }}
[twin.variants.cosine]
regulariser = {{ kind = "cosine", weight = {weight} }}
[twin.perturbation]
draws = 2
points = 2
"""


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("variants") / "train.txt"
    path.write_text(stdlib_text(700_000)[400_000:], encoding="utf-8")  # disjoint from the eval text
    return path


def _manifest(folder: Path, tiny_dir, eval_file, train_file, weight: float = 0.5, workers: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return twin_manifest(
        folder / "variants.toml", tokenizer=tiny_dir, eval_file=eval_file, train_file=train_file,
        store=folder / "store", schedule='rule = "dense"\nlog_until = 2\npoints = 2\nlast = 8',
        twin="steps = 8\nbatch_tokens = 256\nlr = 3e-3\nseeds = [0]",
        sections=f"workers = {workers}\n" + VARIANTS.format(train=train_file, weight=weight),
    )  # fmt: skip


def _rows(store: Path) -> pl.DataFrame:
    cols = ("arm", "seed", "step", "block", "r2_lin", "weights_hash", "commit")
    return Store(store).read().select(cols).sort("arm", "seed", "step", "block")


def test_variants_are_their_own_runs_and_a_zero_weight_regulariser_is_the_plain_twin(
    tmp_path, tiny_dir, text_file, train_file
):
    m = load_manifest(_manifest(tmp_path, tiny_dir, text_file, train_file))
    runs = twin.plan_runs(m, m.store_dir)
    assert [r.arm for r in runs] == ["twin", "twin:random", "twin:shuffled", "twin:zero", "twin:cosine"]
    assert len({r.digest for r in runs}) == len(runs) and len({r.folder for r in runs}) == len(runs)
    assert {o.status for o in run_arm(m, "twin")} == {"done"}
    rows = _rows(m.store_dir)
    plain, zero = (rows.filter(pl.col("arm") == a).drop("arm", "commit") for a in ("twin", "twin:zero"))
    assert plain.height > 0 and plain.equals(zero)  # λ = 0: the plain twin's rows, bit for bit
    cosine = rows.filter(pl.col("arm") == "twin:cosine").drop("arm", "commit")
    assert not cosine.filter(pl.col("step") > 0)["weights_hash"].is_in(plain["weights_hash"].implode()).any()
    pert = rows.filter(pl.col("arm") == "twin:perturbation")
    assert sorted(set(pert["step"])) == list(m.expected_steps()["twin:perturbation"]) and set(pert["seed"]) == {0, 1}
