"""`trajectory sweep` end to end against the local Hub stand-in: cache, faults, resume, disk, dask."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from builders import assert_rows_match, local_manifest
from hubserver import REPO, Fault, build_checkpoints, files_of, point_client_at

from trajectory.cli import main
from trajectory.config import DataSpec, MetricConfig
from trajectory.manifest import load_manifest, quick_manifest
from trajectory.scheduler import SweepOptions, run_sweep
from trajectory.sources.hub import HubSource, RetryPolicy
from trajectory.store import Store

STEPS = [0, 1, 2, 4, 8, 16]
REVS = [f"step{s}" for s in STEPS]
FAST = RetryPolicy(attempts=4, wait=0.05)
METRICS = ["r2_lin", "r2_lin_global", "r2_median_dim"]
MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tokenizer):
    return build_checkpoints(tmp_path_factory.mktemp("sweep") / "ck", STEPS, tokenizer, bin_steps=(8,))


def manifest_for(tmp_path, text_file, revisions=REVS, repo=REPO, store="store"):
    data = DataSpec("text", str(text_file), "text", 2048, 64)
    return quick_manifest(repo, list(revisions), data, MetricConfig(), str(tmp_path / store))


def sweep(manifest, **kw):
    return run_sweep(manifest, SweepOptions(progress=False, retry=FAST, **kw))


def mtimes(store_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in Store(store_dir).unit_files()}


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sweep_gives_measure_s_numbers_and_reports_duplicates_and_gaps(hub, ckpts, text_file, tmp_path, capsys):
    code, out, err = cli(
        capsys,
        "sweep",
        "--repo",
        REPO,
        "--revisions",
        ",".join(REVS + ["step32"]),
        "--text-file",
        text_file,
        "--tokens",
        2048,
        "--seq-len",
        64,
        "--store",
        tmp_path / "s",
        "--no-progress",
    )
    assert code == 1 and "Traceback" not in err
    summary = out.strip().splitlines()
    assert len(summary) == 1 and "6 measured, 0 cached, 1 failed" in summary[0]
    assert "hub:step32 (revision not found on the Hub)" in summary[0]
    assert "identical weights: step0=step1=step2" in summary[0] and "missing: step32" in summary[0]
    rows = Store(tmp_path / "s").read()
    assert rows.height == 12 and rows.select("revision", "block").n_unique() == 12
    served = hub.state.repos[REPO]
    for rev in REVS:
        code, out, _ = cli(
            capsys,
            "measure",
            ckpts,
            "--revision",
            rev,
            "--text-file",
            text_file,
            "--tokens",
            2048,
            "--seq-len",
            64,
            "--json",
        )
        want = json.loads(out)
        got = rows.filter(pl.col("revision") == rev).sort("block")
        assert got["commit"].to_list() == [served[rev].commit] * 2 and got["data_hash"][0] == want["data_hash"]
        for block, row in zip(want["blocks"], got.iter_rows(named=True)):
            for m in METRICS:
                assert abs(row[m] - block[m]) <= 1e-9, (rev, m)
    assert HubSource(REPO).weights_on_disk() == 0  # every revision evicted after measuring


def test_rerun_downloads_nothing_computes_nothing_and_retries_only_the_missing(hub, ckpts, text_file, tmp_path):
    manifest = manifest_for(tmp_path, text_file, REVS[3:] + ["step32"])
    first = sweep(manifest)
    assert first.count("done") == 3 and len(first.failed) == 1
    before = mtimes(manifest.store_dir)
    hub.state.reset_counters()
    again = sweep(manifest)
    assert again.count("cached") == 3 and again.count("done") == 0
    assert hub.state.downloads() == [] and hub.state.downloads("HEAD") == [] and hub.state.bytes_sent == 0
    assert mtimes(manifest.store_dir) == before
    hub.state.add_revision(REPO, "step32", files_of(ckpts / "step16"))  # the gap is filled upstream
    third = sweep(manifest)
    assert third.count("done") == 1 and third.count("cached") == 3 and not third.failed
    assert {r.revision for r in hub.state.downloads()} == {"step32"}
    assert mtimes(manifest.store_dir).items() >= before.items()
    assert Store(manifest.store_dir).failures() == []


def test_transient_faults_are_retried_and_a_revision_without_weights_fails_alone(hub, ckpts, text_file, tmp_path):
    hub.state.faults += [
        Fault("429", revision="step1", filename="config.json", method="HEAD"),
        Fault("500", revision="step4", filename="model.safetensors", method="GET"),
        Fault("reset", revision="step16", filename="model.safetensors", method="GET"),
        Fault("truncate", revision="step8", filename="pytorch_model.bin"),
        Fault("reset", revision="step2", filename="model.safetensors", method="HEAD"),
    ]
    hub.state.add_revision(REPO, "step64", {"config.json": (ckpts / "step4" / "config.json").read_bytes()})
    report = sweep(manifest_for(tmp_path, text_file, REVS + ["step64"]))
    assert report.count("done") == 6
    assert [(o.label, o.reason) for o in report.failed] == [
        ("hub:step64", f"{REPO}@step64 has no weights on the Hub (looked for model.safetensors and pytorch_model.bin)")
    ]
    seen = {(r.revision, r.status) for r in hub.state.requests}
    assert {("step1", 429), ("step4", 500), ("step16", 0), ("step2", 0)} <= seen
    assert all(f.times == 0 for f in hub.state.faults)


def test_disk_holds_at_most_prefetch_plus_one_revisions(hub, text_file, tmp_path, monkeypatch):
    peak = []
    fetch = HubSource.fetch

    def watched(self, revision, commit):
        got = fetch(self, revision, commit)
        peak.append(self.weights_on_disk())
        return got

    monkeypatch.setattr(HubSource, "fetch", watched)
    report = sweep(manifest_for(tmp_path, text_file, REVS[2:]), prefetch=1)
    assert report.count("done") == 4 and len(peak) == 4 and 1 <= max(peak) <= 2
    assert HubSource(REPO).weights_on_disk() == 0


def test_offline_from_a_populated_cache_and_fast_failure_when_the_hub_is_unreachable(
    hub, text_file, tmp_path, monkeypatch, capsys
):
    online = sweep(manifest_for(tmp_path, text_file, REVS[3:], store="online"), keep_weights=True)
    assert online.count("done") == 3 and HubSource(REPO).weights_on_disk() == 3  # --keep-weights keeps them
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    hub.state.reset_counters()
    offline = sweep(manifest_for(tmp_path, text_file, REVS[3:], store="offline"))
    assert offline.count("done") == 3 and hub.state.requests == []
    a, b = (Store(tmp_path / s).read().sort("revision", "block") for s in ("online", "offline"))
    assert a.select(METRICS + ["commit"]).equals(b.select(METRICS + ["commit"]))
    point_client_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "cache2")  # nothing listens on port 9
    start = time.perf_counter()
    code, out, err = cli(
        capsys, "sweep", "--repo", REPO, "--revisions", "step0", "--text-file", text_file, "--store", tmp_path / "none"
    )
    assert time.perf_counter() - start < 10
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "unreachable" in err and "HF_HUB_OFFLINE=1" in err


def test_local_arm_from_a_manifest_and_results_export(ckpts, text_file, tmp_path, capsys, monkeypatch):
    toml = local_manifest(
        tmp_path / "mine.toml", ckpts, text_file, [0, 4, 8], tmp_path / "store", arms=("local", "random-init")
    )
    calls = []
    import trajectory.scheduler as scheduler
    from trajectory.arms import Unit
    from trajectory.config import Provenance

    real = scheduler.make_arm

    class NotBuilt:
        arm, chained = "random-init", False

        def plan(self):
            prov = Provenance("mine", "random-init", "m", "init", 0, "c", "d", "k", seed=0)
            return [Unit(prov)]

        def start(self, pending):
            pass

        def run(self, unit):
            raise RuntimeError("not built")

        def close(self):
            pass

    def fake_make_arm(manifest, arm, options):
        if arm != "random-init":
            return real(manifest, arm, options)
        calls.append((manifest.name, str(manifest.store_dir), options.device, options.progress))
        return NotBuilt()

    monkeypatch.setattr(scheduler, "make_arm", fake_make_arm)
    code, out, _ = cli(capsys, "sweep", toml, "--no-progress")
    assert code == 1 and "3 measured" in out and "random-init:seed0 (not built)" in out, out
    assert calls == [("mine", str(tmp_path / "store"), "cpu", False)]
    code, out, err = cli(capsys, "results", toml, "--csv", tmp_path / "r.csv")
    table = pl.read_csv(tmp_path / "r.csv")
    assert code == 0 and table.height == 6 and set(table["revision"]) == {"step0", "step4", "step8"}
    assert set(table["arm"]) == {"local"} and "6 rows" in err
    code, out, _ = cli(capsys, "results", toml)
    assert code == 0 and out.count("step4") == 2


def test_dask_local_cluster_gives_the_same_rows_as_the_local_run(hub, text_file, tmp_path, capsys):
    from dask.distributed import LocalCluster

    local = sweep(manifest_for(tmp_path, text_file, REVS[:4], store="local"))
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        code, out, err = cli(
            capsys,
            "sweep",
            "--repo",
            REPO,
            "--revisions",
            ",".join(REVS[:4]),
            "--text-file",
            text_file,
            "--tokens",
            2048,
            "--seq-len",
            64,
            "--store",
            tmp_path / "dask",
            "--dask",
            cluster.scheduler_address,
            "--no-progress",
        )
    assert code == 0 and local.count("done") == 4 and "4 measured" in out, err
    cols = ["key", "revision", "block", "commit", "weights_hash", *METRICS]
    a, b = (Store(tmp_path / s).read().select(cols).sort("revision", "block") for s in ("local", "dask"))
    assert a.height == 8  # a Dask worker thread runs with cores // workers torch threads: a tolerance (issue 21)
    assert_rows_match(a, b)


def test_quick_form_needs_step_numbered_revisions(capsys, text_file):
    code, _, err = cli(capsys, "sweep", "--repo", REPO, "--revisions", "main,step1", "--text-file", text_file)
    assert code == 2 and "--revisions must be names like step0" in err


HUB_MANIFESTS = [
    "pythia-14m",
    "pythia-31m",
    "pythia-70m",
    "pythia-160m",
    "pythia-410m",
    "pythia-160m-deduped",
    *(f"pythia-160m-seed{i}" for i in range(1, 10)),
]


@pytest.mark.parametrize("name", HUB_MANIFESTS)
def test_every_manifest_loads(name):
    m = load_manifest(MANIFESTS / f"{name}.toml")
    assert m.name == name and m.repo.startswith("EleutherAI/") and "hub" in m.arms
    assert m.schedule.revisions()[:3] == ["step0", "step1", "step2"] and len(m.schedule.steps) == 154
    assert m.store_dir == Path("store") / name


def test_seed_manifests_name_polypythia_repos():
    repos = {load_manifest(p).repo for p in MANIFESTS.glob("pythia-160m-seed*.toml")}
    assert repos == {f"EleutherAI/pythia-160m-seed{i}" for i in range(1, 10)}


def test_kill_9_mid_sweep_then_rerun_loses_nothing_and_recomputes_nothing(hub, ckpts, text_file, tmp_path):
    hub.state.latency = 0.15
    store = tmp_path / "store"
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "0"}
    argv = [
        sys.executable,
        "-m",
        "trajectory",
        "sweep",
        "--repo",
        REPO,
        "--revisions",
        ",".join(REVS),
        "--text-file",
        str(text_file),
        "--tokens",
        "2048",
        "--seq-len",
        "64",
        "--store",
        str(store),
        "--no-progress",
    ]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path.cwd())
    deadline = time.time() + 120
    while len(mtimes(store) if (store / "units").is_dir() else {}) < 2 and proc.poll() is None:
        assert time.time() < deadline, "the sweep never finished a unit"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    before = mtimes(store)
    assert 2 <= len(before) < len(REVS)
    hub.state.latency = 0.0
    report = sweep(
        quick_manifest(REPO, REVS, DataSpec("text", str(text_file), "text", 2048, 64), MetricConfig(), str(store))
    )
    assert report.count("cached") == len(before) and report.count("done") == len(REVS) - len(before)
    assert not report.failed
    rows = Store(store).read()
    assert rows.height == 2 * len(REVS) and rows.select("revision", "block").n_unique() == rows.height
    assert {k: v for k, v in mtimes(store).items() if k in before} == before


def test_ctrl_c_during_a_download_exits_at_once_without_waiting_for_it_or_the_queued_prefetch(
    hub, ckpts, text_file, tmp_path
):
    hub.state.bandwidth = 10_000  # bytes/s: one revision's weights (~190 kB) take ~19 s to arrive
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "0"}
    argv = [sys.executable, "-m", "trajectory", "sweep", "--repo", REPO, "--revisions", ",".join(REVS[3:]),
            "--text-file", str(text_file), "--tokens", "1024", "--seq-len", "64", "--prefetch", "1",
            "--store", str(tmp_path / "store"), "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not any(r.filename == "model.safetensors" and r.method == "GET" for r in hub.state.requests):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    time.sleep(0.5)  # the download is under way, the next revision queued behind it
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    waited = time.perf_counter() - sent
    assert proc.returncode == 130 and "interrupted" in err.decode(), err.decode()[-2000:]
    assert waited < 5, f"Ctrl-C took {waited:.1f} s: it waited for a download"
    weights = [r for r in hub.state.requests if r.filename == "model.safetensors" and r.method == "GET"]
    assert len(weights) == 1  # the queued revision never started


def test_faults_on_every_download_give_exactly_the_rows_of_a_fault_free_run(
    hub, ckpts, text_file, tmp_path, monkeypatch
):
    revs = ["step4", "step8", "step16"]  # step8 is a pytorch_model.bin revision
    clean = sweep(manifest_for(tmp_path, text_file, revs, store="clean"))
    point_client_at(monkeypatch, hub.endpoint, tmp_path / "cache-faulty")  # a cold cache: every file fetched again
    hub.state.faults += [
        Fault("429", revision="step4", filename="config.json", method="GET"),
        Fault("500", revision="step4", filename="model.safetensors", method="GET"),
        Fault("truncate", revision="step8", filename="pytorch_model.bin"),
        Fault("reset", revision="step16", filename="model.safetensors", method="GET"),
        Fault("500", revision="step16", filename="model.safetensors", method="HEAD"),
    ]
    faulty = sweep(manifest_for(tmp_path, text_file, revs, store="faulty"))
    assert all(f.times == 0 for f in hub.state.faults)  # every fault was met
    assert clean.count("done") == faulty.count("done") == 3 and not faulty.failed
    cols = [c for c in Store(tmp_path / "clean").read().columns if not c.startswith("seconds_")]
    a, b = (Store(tmp_path / s).read().select(cols).sort("revision", "block") for s in ("clean", "faulty"))
    assert a.height == 6 and a.equals(b)  # every column, the keys included, bit for bit
