"""The one-call GPU device check (benches/gpu_check.sh): its CPU dry run at the tiny shape, end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benches" / "gpu_check.sh"


def run(*args: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PY": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["bash", str(SCRIPT), *args, "--out", str(out)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    return run("--dry-run", out=out), out


def test_the_dry_run_passes_every_step_and_prints_the_bench_lines(dry_run):
    proc, out = dry_run
    summary = (out / "summary.txt").read_text()
    assert proc.returncode == 0, summary + (out / "gpu_check.log").read_text()[-3000:]
    for step in ("bench-measure", "bench-twin", "profile", "twin", "report"):
        assert re.search(rf"^gpu_check: {step}: exit 0 ", summary, re.M), f"{step} missing or failed:\n{summary}"
    ratio = float(re.search(r"measure_over_forward=([0-9.]+)", summary).group(1))
    per_update = float(re.search(r"twin_s_per_update=([0-9.]+)", summary).group(1))
    assert ratio > 0 and per_update > 0
    assert "twin_mfu=nan" in summary  # a CPU has no bf16 peak to divide by: said, never invented


def test_the_results_archive_holds_the_store_and_the_report(dry_run):
    _, out = dry_run
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    units = [n for n in names if n.startswith("store/units/") and n.endswith(".parquet")]
    # manifests/gpu-check-tiny.toml: 3 random-init draws + the twin's dense schedule (step 0, 1, 2, 4, then
    # 2 points to 8) = 3 + 6 units; none may be missing.
    assert len(units) == 9, names
    assert "figures/report.md" in names


def test_an_unknown_argument_is_one_line_and_exit_2(tmp_path):
    proc = run("--fast", out=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--fast" in proc.stderr
