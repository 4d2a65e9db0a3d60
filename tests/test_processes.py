"""Processes and signals: workers die with their sweep, Ctrl-C does not wait for downloads, several
processes share one store, and ``--workers N`` gives the rows of a sequential run (issue 15)."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from trajectory.store import Store

STUB = Path(__file__).resolve().parent / "stubarm.py"
linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, …); None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    stats = {int(p.parent.name): _stat(int(p.parent.name)) for p in Path("/proc").glob("[0-9]*/stat")}
    ppid = {child: int(f[1]) for child, f in stats.items() if f}
    out, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, parent in ppid.items() if parent in frontier} - out
        out |= frontier
    return out


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie has exited


def n_units(store: Path) -> int:
    units = store / "units"
    return len([p for p in units.glob("*.parquet") if not p.name.startswith(".")]) if units.is_dir() else 0


@linux_only
def test_kill_9_of_a_parallel_sweep_takes_its_workers_and_their_resource_tracker_with_it(tmp_path):
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, str(STUB), str(store), "200", "0.2", "--workers", "2"])
    deadline = time.time() + 120
    while n_units(store) < 4:  # both workers are measuring and writing
        assert proc.poll() is None and time.time() < deadline, "the parallel sweep never wrote a unit"
        time.sleep(0.05)
    below = descendants(proc.pid)
    assert len(below) >= 2  # the loky workers (and loky's resource tracker)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 5
    while any(alive(p) for p in below) and time.time() < deadline:
        time.sleep(0.1)
    survivors = [p for p in below if alive(p)]
    for pid in survivors:  # leave nothing behind, whatever the outcome
        os.kill(pid, signal.SIGKILL)
    assert survivors == [], f"{len(survivors)} of {len(below)} worker processes outlived their sweep"
    written = n_units(store)
    time.sleep(1.0)
    assert n_units(store) == written < 200  # and nobody writes units any more


def test_two_processes_writing_one_store_both_write_and_leave_one_whole_file_per_unit(tmp_path):
    store, go, n = tmp_path / "store", tmp_path / "go", 24
    procs = [
        subprocess.Popen(
            [sys.executable, str(STUB), str(store), str(n), "0.05", "--start-after", str(go), *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for flags in ([], ["--reverse"])  # one from each end: they meet, and may both write the middle units
    ]
    time.sleep(1.0)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e.decode()[-1500:] for _, e in outs]
    done = [set(json.loads(o)) for o, _ in outs]
    assert all(len(d) >= n // 4 for d in done), [len(d) for d in done]  # both wrote, a good share each
    assert done[0] | done[1] == {f"local:step{i}" for i in range(n)}
    units = Store(store).units
    assert sorted(p.name for p in units.iterdir()) == sorted(p.name for p in units.glob("[0-9a-f]*.parquet"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unreadable or inconsistent file would warn
        rows = Store(store).read()
    assert rows.height == 2 * n and rows.select("revision", "block").n_unique() == 2 * n
    assert rows["r2_lin"].to_list() == [1 / (2 + s + b) for s, b in zip(rows["step"], rows["block"])]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tokenizer):
    from hubserver import build_checkpoints

    return build_checkpoints(tmp_path_factory.mktemp("procs") / "ck", [0, 4, 8, 16], tokenizer, same_as_step0=())


def test_workers_in_real_processes_give_the_rows_of_a_sequential_run(ckpts, text_file, tmp_path):
    """The keys, commits and hashes exactly; the statistics within :data:`builders.LAYOUT_TOL`."""
    from builders import assert_rows_match, local_manifest

    from trajectory.manifest import load_manifest
    from trajectory.scheduler import SweepOptions, run_sweep

    runs = {}
    for workers in (1, 2):
        toml = local_manifest(tmp_path / f"w{workers}.toml", ckpts, text_file, [0, 4, 8, 16], tmp_path / f"s{workers}")
        report = run_sweep(load_manifest(toml), SweepOptions(progress=False, workers=workers))
        assert report.count("done") == 4 and not report.failed, report.summary()
        runs[workers] = Store(tmp_path / f"s{workers}").read()
    cols = ["revision", "block", "commit", "data_hash", "weights_hash", "r2_lin", "r2_lin_global", "r2_median_dim"]
    sequential, parallel = (runs[w].select(cols).sort("revision", "block") for w in (1, 2))
    assert sequential.height == 8  # 1 process of the machine's threads vs 2 of cores // 2: a tolerance (issue 21)
    assert_rows_match(parallel, sequential)
    if Path("/proc/self/stat").exists():  # the workers were processes of their own (loky keeps them a while)
        workers = [p for p in descendants(os.getpid()) if b"loky" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(workers) >= 2


def test_the_layout_tolerance_passes_last_bit_noise_and_catches_a_real_or_exact_difference():
    import polars as pl
    from builders import LAYOUT_TOL, assert_rows_match

    rows = pl.DataFrame({"weights_hash": ["a", "b"], "r2_lin": [0.5, float("nan")], "cond": [3e6, 1.0]})
    noisy = rows.with_columns(pl.col("r2_lin") + 1e-9, pl.col("cond") * (1 + 1e-9))
    assert_rows_match(noisy, rows)  # reductions in another order: within the tolerance
    for bad in (
        rows.with_columns(pl.col("r2_lin") + 10 * LAYOUT_TOL),
        rows.with_columns(pl.Series("weights_hash", ["a", "c"])),
        rows.with_columns(pl.Series("r2_lin", [0.5, 0.1])),
    ):
        with pytest.raises(AssertionError):
            assert_rows_match(bad, rows)
