"""Several twin seeds: each its own init and data order, reproducible bit for bit, resumable after kill -9;
and the measurement schedule that puts points where the curves move."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from builders import assert_rows_match, run_arm, stdlib_text, twin_manifest

from trajectory.arms import twin
from trajectory.config import dense_steps, twin_schedule
from trajectory.manifest import load_manifest
from trajectory.store import Store

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
pytestmark = pytest.mark.usefixtures("one_thread")


def test_dense_schedule_puts_thirty_points_after_the_doubling_phase():
    steps = dense_steps(log_until=64, points=40, last=1200)
    assert steps[:8] == [0, 1, 2, 4, 8, 16, 32, 64] and steps[-1] == 1200
    after = [s for s in steps if s > 64]
    assert len(after) == 40 and max(b - a for a, b in zip(after, after[1:])) <= 30
    assert dense_steps(log_until=2, points=3, last=8) == [0, 1, 2, 4, 6, 8]


def test_the_demo_measures_two_seeds_densely():
    """The shipped demo: ≥ 2 twin seeds, ≥ 30 measured points after its doubling phase, ≥ 5 random-init seeds."""
    m = load_manifest(MANIFESTS / "demo.toml")
    steps = [t for t, _ in twin_schedule(m.schedule.steps, m.twin.steps)]
    powers = [s for s in steps if s and s & (s - 1) == 0]
    doubling_end = max(p for p in powers if all(q in steps for q in [2**k for k in range(p.bit_length())]))
    assert len(m.twin.seeds) >= 2 and len(m.random_init_seeds) >= 5
    assert len([s for s in steps if s > doubling_end]) >= 30 and steps[-1] == m.twin.steps


def _manifest(folder: Path, tiny_dir: Path, eval_file: Path, train_file: Path, store: Path, seeds, workers=1):
    return twin_manifest(
        folder / "tiny-seeds.toml", tokenizer=tiny_dir, eval_file=eval_file, train_file=train_file, store=store,
        schedule='rule = "dense"\nlog_until = 4\npoints = 4\nlast = 24', sections=f"workers = {workers}",
        twin=f"steps = 24\nbatch_tokens = 512\nlr = 3e-3\nseeds = {list(seeds)}",
    )  # fmt: skip


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("seeds") / "train.txt"
    path.write_text(stdlib_text(1_000_000)[400_000:], encoding="utf-8")  # disjoint from the eval text
    return path


def _rows(store: Path) -> pl.DataFrame:
    return Store(store).read().select("seed", "step", "block", "r2_lin", "weights_hash").sort("seed", "step", "block")


def test_seeds_differ_in_init_and_data_and_a_seed_reruns_bit_for_bit(tmp_path, tiny_dir, text_file, train_file):
    both = load_manifest(_manifest(tmp_path, tiny_dir, text_file, train_file, tmp_path / "a", seeds=(0, 1)))
    assert {o.status for o in run_arm(both, "twin")} == {"done"}
    rows = _rows(tmp_path / "a")
    assert sorted(set(rows["seed"])) == [0, 1]
    by_seed = {s: rows.filter(pl.col("seed") == s) for s in (0, 1)}
    assert by_seed[0]["step"].to_list() == by_seed[1]["step"].to_list()
    assert set(by_seed[0]["weights_hash"]).isdisjoint(by_seed[1]["weights_hash"])  # other init, other updates
    runs = {r.seed: r for r in twin.plan_runs(both, both.store_dir)}
    assert runs[0].digest != runs[1].digest and runs[0].folder != runs[1].folder
    assert (runs[0].batch(0, "cpu") != runs[1].batch(0, "cpu")).any()  # each seed its own data order

    alone = load_manifest(_manifest(tmp_path, tiny_dir, text_file, train_file, tmp_path / "b", seeds=(1,)))
    run_arm(alone, "twin")
    again = _rows(tmp_path / "b")
    assert again.equals(by_seed[1])  # same weights hash and the same R²_lin, bit for bit


def _running(store: Path) -> int:
    return len(list((store / "units").glob("*.parquet"))) if (store / "units").is_dir() else 0


def test_a_multi_seed_run_killed_with_sigkill_resumes_to_the_uninterrupted_rows(
    tmp_path, tiny_dir, text_file, train_file
):
    ref = load_manifest(_manifest(tmp_path, tiny_dir, text_file, train_file, tmp_path / "ref", (0, 1), workers=2))
    from trajectory.scheduler import SweepOptions, run_sweep

    assert not run_sweep(ref, SweepOptions(progress=False)).failed
    (tmp_path / "cut-manifest").mkdir()
    path = _manifest(tmp_path / "cut-manifest", tiny_dir, text_file, train_file, tmp_path / "cut", (0, 1), workers=2)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "trajectory", "sweep", str(path), "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 120
    while _running(tmp_path / "cut") < 4 and proc.poll() is None:
        assert time.time() < deadline, "the sweep never stored a unit"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _running(tmp_path / "cut")
    assert proc.returncode == -signal.SIGKILL and 0 < done < 2 * len(ref.schedule.steps)
    time.sleep(1.0)  # workers die with their parent; give them a moment to go
    report = run_sweep(load_manifest(path), SweepOptions(progress=False))
    assert not report.failed and report.count("cached") >= done - 2  # (a worker may finish one more unit)
    assert_rows_match(_rows(tmp_path / "cut"), _rows(tmp_path / "ref"))  # hashes exactly; R² in another process


def test_every_seed_trains_with_its_recorded_threads_so_workers_do_not_change_a_weight(
    tmp_path, tiny_dir, text_file, train_file, monkeypatch
):
    """Issue 21: a sequential sweep (the process's 2 threads) and ``--workers 2`` (1 thread each) trained
    different weights.  Every seed now trains with ``[twin] threads`` (default 1), hashed into the digest:
    the two layouts are the same computation, so their weights hashes may be compared bit for bit."""
    import torch

    from trajectory.scheduler import SweepOptions, run_sweep

    def manifest(store: str, workers: int):
        return twin_manifest(
            tmp_path / f"threads-{store}.toml", tokenizer=tiny_dir, eval_file=text_file, train_file=train_file,
            store=tmp_path / store, schedule="steps = [0, 2, 4, 8]", sections=f"workers = {workers}",
            twin="steps = 8\nbatch_tokens = 512\nlr = 3e-3\nseeds = [0, 1]",
        )  # fmt: skip

    seen, real = [], twin.update
    monkeypatch.setattr(twin, "update", lambda *a: seen.append(torch.get_num_threads()) or real(*a))
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # what a sequential sweep on a 2-core machine has
    try:
        sequential = load_manifest(manifest("seq", 1))
        assert not run_sweep(sequential, SweepOptions(progress=False)).failed
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {sequential.twin.threads} == {1}
    assert not run_sweep(load_manifest(manifest("par", 2)), SweepOptions(progress=False)).failed
    seq, par = _rows(tmp_path / "seq"), _rows(tmp_path / "par")
    assert seq.height == par.height == 2 * 4 * 2 and seq["weights_hash"].n_unique() == 2 * 4
    assert par["weights_hash"].to_list() == seq["weights_hash"].to_list()  # one computation: bit for bit
    assert_rows_match(par, seq)  # and R²_lin, measured in other processes, within the layout tolerance
    spec = sequential.twin
    run = twin.plan_runs(sequential, sequential.store_dir)[0]
    other = twin.run_digest(dataclasses.replace(spec, threads=2), run.seed, run.config, run.train, "cpu")
    assert other != run.digest  # another thread count is another run: a resume under it never mixes the two
