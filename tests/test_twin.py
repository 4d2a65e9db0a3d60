"""The random-init twin: Pythia's optimiser shape, the mapped schedule, in-loop rows, checkpoints, resume."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from builders import run_arm, stdlib_text, twin_manifest

from trajectory.arms import training, twin
from trajectory.config import TwinSpec, pythia_steps, twin_schedule
from trajectory.engine.measure import measure_blocks
from trajectory.errors import TrajectoryError
from trajectory.manifest import load_manifest
from trajectory.sources.loading import load_model
from trajectory.store import Store

SCHEDULE = [0, 1, 2, 4, 8, 16, 32, 64, 128]
BUDGET = 40


pytestmark = pytest.mark.usefixtures("one_thread")


def test_schedule_maps_by_fraction_and_keeps_early_doubling_steps():
    points = twin_schedule(pythia_steps(), 600)
    steps = [t for t, _ in points]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 600
    assert {1, 2, 4, 8, 16, 32, 64, 128, 256, 512} <= set(steps)
    assert dict(points)[600] == 143_000
    assert round(71_000 * 600 / 143_000) == 298 and abs(dict(points)[298] - 71_000) <= 143_000 / 600 / 2
    assert round(2000 * 600 / 143_000) == 8 and 8 in steps  # Pythia step2000 ↦ twin step 8
    pythia = [p for _, p in points]
    assert pythia == sorted(pythia)
    assert twin_schedule([0, 1, 2, 4, 8, 16, 20], 5) == [(0, 0), (1, 4), (2, 8), (4, 16), (5, 20)]
    assert twin_schedule([0, 10, 20], 5) == [(0, 0), (2, 8), (5, 20)]  # no doubling steps to keep
    with pytest.raises(TrajectoryError):
        twin_schedule([0], 10)


def test_learning_rate_warms_up_then_cosine_to_a_tenth():
    spec = TwinSpec(steps=1000, lr=1e-3, warmup_frac=0.01, min_lr_frac=0.1)
    lrs = np.array([training.lr_at(t, spec) for t in range(spec.steps)])
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # 10 warm-up updates
    assert np.all(np.diff(lrs[:10]) > 0) and np.all(np.diff(lrs[10:]) <= 0)
    assert lrs[10 + 495] == pytest.approx(0.55e-3, rel=1e-2)  # cosine midpoint: (peak + floor) / 2
    assert lrs[-1] == pytest.approx(1e-4, rel=1e-3) and lrs.min() >= 1e-4 - 1e-12


def test_optimizer_is_pythia_shaped():
    from transformers import AutoConfig

    from trajectory.engine.models import fresh_model

    cfg = AutoConfig.for_model(
        "gpt_neox", vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model = fresh_model(cfg, 0, with_head=True)
    opt = training.make_optimizer(model, TwinSpec())
    decay, plain = opt.param_groups
    assert decay["betas"] == (0.9, 0.95) and decay["eps"] == 1e-8
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("bias") or "norm" in names[id(p)] for p in plain["params"])
    assert any("embed_in" in names[id(p)] for p in decay["params"])
    assert len(decay["params"]) + len(plain["params"]) == len(list(model.parameters()))


def _write_manifest(folder, tiny_dir, eval_file, train_file, store, save=True):
    path = twin_manifest(
        folder / "tiny-twin.toml", tokenizer=tiny_dir, eval_file=eval_file, train_file=train_file, store=store,
        arms=("random-init", "twin"), schedule=f"steps = {SCHEDULE}", tokens=4096,
        sections="[random_init]\nseeds = [0]",
        twin=f"steps = {BUDGET}\nbatch_tokens = 512\nlr = 3e-3\nsave_checkpoints = {str(save).lower()}",
    )  # fmt: skip
    return load_manifest(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dir, text_file):
    folder = tmp_path_factory.mktemp("twin")
    train_file = folder / "train.txt"
    train_file.write_text(stdlib_text(1_000_000)[400_000:], encoding="utf-8")  # disjoint from text_file
    manifest = _write_manifest(folder, tiny_dir, text_file, train_file, folder / "store")
    store = Store(manifest.store_dir)
    outcomes = run_arm(manifest, "twin", store)
    return manifest, store, outcomes, folder


def test_twin_rows_for_every_step_and_block_and_loss_falls(trained):
    manifest, store, outcomes, _ = trained
    points = dict(twin_schedule(SCHEDULE, BUDGET))
    assert [o.status for o in outcomes] == ["done"] * len(points)
    rows = store.read().filter(pl.col("arm") == "twin")
    assert rows.height == len(points) * 2
    assert rows.group_by("step", "block").len()["len"].max() == 1
    assert sorted(set(rows["step"])) == sorted(points)
    for r in rows.iter_rows(named=True):
        assert r["pythia_step"] == points[r["step"]] and r["tokens_seen"] == r["step"] * 512
        assert r["status"] == "ok" and math.isfinite(r["r2_lin"])
    run = twin.plan_runs(manifest, store.root)[0]
    losses = pl.read_csv(run.folder / "losses.tsv", separator="\t")
    assert losses.height == BUDGET and losses["step"].to_list() == list(range(1, BUDGET + 1))
    first, last = losses["loss"].head(5).mean(), losses["loss"].tail(5).mean()
    assert last < first - 0.5, (first, last)  # from ~ln(320) ≈ 5.8 down


def test_verify_recomputes_the_twin_run_digest(trained):
    """The twin's units are current under their manifest, and stale once its training spec changes."""
    from dataclasses import replace

    from trajectory.verify import verify_store

    manifest, _, _, _ = trained
    current = verify_store(manifest.store_dir, manifest)
    assert not [f for f in current.findings if f.where.split()[1] == "twin"], current.lines()
    assert not [n for n in current.notes if n.startswith("twin:")], current.notes
    changed = verify_store(manifest.store_dir, replace(manifest, twin=replace(manifest.twin, lr=1e-3)))
    stale = [f for f in changed.findings if f.kind == "stale" and f.where.split()[1] == "twin"]
    assert len(stale) == len(twin_schedule(SCHEDULE, BUDGET))
    assert all("commit twin:" in f.detail for f in stale)


def test_in_loop_numbers_equal_the_saved_checkpoints(trained):
    manifest, store, _, _ = trained
    run = twin.plan_runs(manifest, store.root)[0]
    rows = store.read().filter(pl.col("arm") == "twin")
    for step in (0, 5, BUDGET):
        model, _ = load_model(str(run.folder / "checkpoints"), revision=f"step{step}")
        again = measure_blocks(model, run.eval, manifest.metric)
        stored = rows.filter(pl.col("step") == step).sort("block")["r2_lin"].to_list()
        assert stored == pytest.approx([b["r2_lin"] for b in again], abs=1e-6)
    final = rows.filter(pl.col("step") == BUDGET).sort("block")["r2_lin"].to_numpy()
    start = rows.filter(pl.col("step") == 0).sort("block")["r2_lin"].to_numpy()
    assert np.abs(final - start).max() > 1e-3  # training moved the numbers


def test_twin_step_zero_is_the_family_init_of_its_seed_disjoint_from_the_band_and_rerun_is_cached(trained, monkeypatch):
    """Twin seed s starts from ``fresh_model(config, s)``; the band's draws come from ``band_seed`` children, so
    none of them is a twin's own init (issue 22: a band must be independent of what it judges)."""
    from trajectory.engine.models import fresh_model, weights_hash
    from trajectory.sources.resolve import architecture

    manifest, store, _, _ = trained
    run_arm(manifest, "random-init", store)
    rows = store.read().filter(pl.col("step") == 0)
    ri = rows.filter(pl.col("arm") == "random-init")
    tw = rows.filter(pl.col("arm") == "twin")
    seed = manifest.twin.seeds[0]
    assert set(tw["weights_hash"]) == {
        weights_hash(fresh_model(architecture(manifest), seed, init=manifest.init_scheme))
    }
    assert not set(ri["weights_hash"]) & set(tw["weights_hash"])
    monkeypatch.setattr(twin, "train_step", lambda *a, **k: pytest.fail("trained on a cache hit"))
    assert {o.status for o in run_arm(manifest, "twin", store)} == {"cached"}


def test_interrupted_twin_resumes_from_its_last_state(trained, tmp_path, tiny_dir, text_file, monkeypatch):
    manifest0, store0, _, folder = trained
    manifest = _write_manifest(tmp_path, tiny_dir, text_file, folder / "train.txt", tmp_path / "store", save=False)
    store = Store(manifest.store_dir)
    real, calls = twin.train_step, []

    def interrupted(run, model, opt, t, device):
        if t == 15:
            raise KeyboardInterrupt
        calls.append(t)
        return real(run, model, opt, t, device)

    monkeypatch.setattr(twin, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_arm(manifest, "twin", store)
    done = {p.name: p.stat().st_mtime_ns for p in store.units.glob("*.parquet")}
    assert len(done) == 7  # steps 0, 1, 2, 4, 5, 8 and 10 were measured before the interrupt at 15
    calls.clear()
    monkeypatch.setattr(
        twin, "train_step", lambda run, model, opt, t, device: calls.append(t) or real(run, model, opt, t, device)
    )
    run_arm(manifest, "twin", store)
    assert calls[0] == 10 and calls[-1] == BUDGET - 1  # resumed from the state saved at step 10
    assert all(p.stat().st_mtime_ns == done[p.name] for p in store.units.glob("*.parquet") if p.name in done)
    ours = store.read().sort("step", "block")["r2_lin"].to_numpy()
    theirs = store0.read().filter(pl.col("arm") == "twin").sort("step", "block")["r2_lin"].to_numpy()
    assert np.allclose(ours, theirs, atol=1e-6, rtol=0)


def test_twin_refuses_to_evaluate_on_its_training_text(tmp_path, tiny_dir, text_file):
    manifest = _write_manifest(tmp_path, tiny_dir, text_file, text_file, tmp_path / "store")
    with pytest.raises(TrajectoryError, match="disjoint"):
        run_arm(manifest, "twin")


@pytest.mark.gpu
def test_cuda_twin_trains_in_bf16_autocast(tmp_path, tiny_dir, text_file):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    train_file = tmp_path / "train.txt"
    train_file.write_text(stdlib_text(1_000_000)[400_000:], encoding="utf-8")
    manifest = _write_manifest(tmp_path, tiny_dir, text_file, train_file, tmp_path / "store", save=False)
    store = Store(manifest.store_dir)
    assert {o.status for o in run_arm(manifest, "twin", store, device="cuda")} == {"done"}
    losses = pl.read_csv(twin.plan_runs(manifest, store.root, "cuda")[0].folder / "losses.tsv", separator="\t")
    assert losses["loss"].tail(5).mean() < losses["loss"].head(5).mean() - 0.5
    assert (
        twin.plan_runs(manifest, store.root, "cuda")[0].digest != twin.plan_runs(manifest, store.root, "cpu")[0].digest
    )  # bf16 ≠ fp32 run
