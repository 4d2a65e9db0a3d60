"""Twin variants as manifest tables: controls (random, shuffled tokens), a regulariser, the perturbation null;
each its own run with its own digest, resume and staleness."""

from __future__ import annotations

import math
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


def _chi_square_p(counts: np.ndarray) -> float:
    """Upper-tail p of Pearson's X² against uniform counts (Wilson–Hilferty: (X²/k)^(1/3) is ≈ normal)."""
    k, expected = counts.size - 1, counts.sum() / counts.size
    x2 = float(((counts - expected) ** 2 / expected).sum())
    z = ((x2 / k) ** (1 / 3) - (1 - 2 / (9 * k))) / np.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


def test_random_tokens_are_uniform_and_reproducible_per_seed():
    windows = control_windows("random", None, 1_000_000, 100, seed=7, vocab=4096)
    assert windows.shape == (10_000, 100) and windows.min() >= 0 and windows.max() < 4096
    assert _chi_square_p(np.bincount(windows.reshape(-1), minlength=4096)) > 0.001
    assert np.array_equal(windows, control_windows("random", None, 1_000_000, 100, seed=7, vocab=4096))
    assert not np.array_equal(windows, control_windows("random", None, 1_000_000, 100, seed=8, vocab=4096))


def test_shuffled_tokens_keep_every_count_and_destroy_the_order(tiny_dir, train_file):
    from trajectory.sources.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    base = train_tokens(f"text:{train_file}", tok, 64 * 200, 64)
    shuffled = train_tokens(f"shuffled:text:{train_file}", tok, 64 * 200, 64, seed=3)
    assert shuffled.windows.shape == base.windows.shape
    assert np.array_equal(np.sort(shuffled.windows, axis=None), np.sort(base.windows, axis=None))  # counts exactly
    assert (shuffled.windows != base.windows).mean() > 0.5
    again = train_tokens(f"shuffled:text:{train_file}", tok, 64 * 200, 64, seed=3)
    assert np.array_equal(again.windows, shuffled.windows) and again.data_hash == shuffled.data_hash
    other = train_tokens(f"shuffled:text:{train_file}", tok, 64 * 200, 64, seed=4)
    assert other.data_hash != shuffled.data_hash


def _tiny():
    from builders import tiny_config

    from trajectory.engine.models import fresh_model

    return fresh_model(tiny_config("gpt_neox"), 0, with_head=True)


def test_perturbation_moves_each_tensor_as_far_as_training_did_and_repeats_per_seed():
    theta0 = {n: p.detach().clone() for n, p in _tiny().named_parameters()}
    gen = torch.Generator().manual_seed(11)
    theta_t = {n: p + 0.01 * (i + 1) * torch.randn(p.shape, generator=gen) for i, (n, p) in enumerate(theta0.items())}
    theta_t[next(iter(theta_t))] = theta0[next(iter(theta0))].clone()  # a tensor training did not move
    eps = perturb.direction(theta0, theta_t, perturb.generator(0, 1, 40, 2))
    for name in theta0:
        want = float((theta_t[name].double() - theta0[name].double()).norm())
        got = float(eps[name].double().norm())
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12)
    same = perturb.direction(theta0, theta_t, perturb.generator(0, 1, 40, 2))
    assert all(torch.equal(eps[n], same[n]) for n in eps)
    other = perturb.direction(theta0, theta_t, perturb.generator(0, 1, 40, 3))
    assert not all(torch.equal(eps[n], other[n]) for n in eps)


def test_cosine_regulariser_equals_a_direct_computation_on_one_batch():
    model = _tiny().eval()
    ids = torch.randint(0, model.config.vocab_size, (3, 16), generator=torch.Generator().manual_seed(0))
    with hidden_pairs(model) as pairs:
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    term = float(cosine_term(pairs).detach())
    seen = {}
    handle = model.gpt_neox.final_layer_norm.register_forward_pre_hook(lambda _m, a: seen.__setitem__("h", a[0]))
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    handle.remove()
    states = [h.double() for h in hs[:-1]] + [seen["h"].double()]  # inputs of blocks 0 … L−1, the last one's output
    cos = [((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).mean() for a, b in zip(states, states[1:])]
    assert len(cos) == model.config.num_hidden_layers and out.logits is not None
    assert term == pytest.approx(float(torch.stack(cos).mean()), abs=1e-6)
    assert Regulariser("cosine", 0.0).weight == 0.0


def test_a_changed_variant_field_makes_only_that_variants_units_stale(tmp_path, tiny_dir, text_file, train_file):
    from trajectory.verify import verify_store

    path = _manifest(tmp_path, tiny_dir, text_file, train_file)
    m = load_manifest(path)
    assert {o.status for o in run_arm(m, "twin")} == {"done"}
    assert not [f for f in verify_store(m.store_dir, m).findings if f.kind in ("stale", "missing")]
    path.write_text(path.read_text().replace("weight = 0.5", "weight = 0.25"))
    stale = [f for f in verify_store(m.store_dir, load_manifest(path)).findings if f.kind == "stale"]
    assert stale and all(" twin:cosine step" in f.where for f in stale)
    assert len(stale) == len(m.expected_steps()["twin:cosine"])


def _count(store: Path) -> int:
    return len(list((store / "units").glob("*.parquet"))) if (store / "units").is_dir() else 0


@pytest.mark.slow
def test_variants_killed_with_sigkill_resume_to_the_uninterrupted_rows(tmp_path, tiny_dir, text_file, train_file):
    from trajectory.scheduler import SweepOptions, run_sweep

    ref = load_manifest(_manifest(tmp_path / "ref", tiny_dir, text_file, train_file, workers=2))
    assert not run_sweep(ref, SweepOptions(progress=False, arms=("twin",))).failed
    path = _manifest(tmp_path / "cut", tiny_dir, text_file, train_file, workers=2)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "trajectory", "sweep", str(path), "--no-progress", "--arms", "twin"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while _count(tmp_path / "cut" / "store") < 12 and proc.poll() is None:
        assert time.time() < deadline, "the sweep never stored a unit"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _count(tmp_path / "cut" / "store")
    assert proc.returncode == -signal.SIGKILL and 0 < done
    time.sleep(1.0)
    report = run_sweep(load_manifest(path), SweepOptions(progress=False, arms=("twin",)))
    assert not report.failed
    assert _rows(tmp_path / "cut" / "store").drop("commit").equals(_rows(tmp_path / "ref" / "store").drop("commit"))


def test_the_report_shows_both_verdicts_and_the_regulariser_effect(tmp_path, tiny_dir, text_file, train_file):
    from trajectory.report import read_experiment, verdict_json, write_report

    path = _manifest(tmp_path, tiny_dir, text_file, train_file)
    path.write_text(
        path.read_text().replace("arms = ['twin']", "arms = ['random-init', 'twin']")
        + "\n[random_init]\nseeds = [50, 51, 52]\n"
    )
    m = load_manifest(path)
    for arm in ("random-init", "twin"):
        assert {o.status for o in run_arm(m, arm)} == {"done"}
    frame = read_experiment(m)[0]
    out = verdict_json(frame, m)
    controls = {r["control"] for r in out["controls"]}
    assert controls == {"twin:random", "twin:shuffled", "twin:perturbation"}
    assert {r["verdict"] for r in out["controls"]} <= {"learned-from-data", "like-control", "undetermined"}
    assert {r["variant"] for r in out["regulariser"]} == {"twin:cosine"}
    md, _ = write_report(frame, m, tmp_path / "fig", [], [])
    text = md.read_text()
    assert "## Against the controls" in text and "vs twin:random" in text and "Regulariser effect" in text
