"""Progress off a terminal: a sweep whose stderr is a log writes one line per finished unit (issue 21 §5)."""

import os
import re
import subprocess
import sys

import pytest
from builders import local_manifest
from hubserver import build_checkpoints

STEPS = [0, 4, 8]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sweep_logged_to_a_file_prints_a_line_per_finished_unit(workers, tokenizer, text_file, tmp_path):
    ckpts = build_checkpoints(tmp_path / "ck", STEPS, tokenizer, same_as_step0=())
    manifest = local_manifest(tmp_path / "logged.toml", ckpts, text_file, STEPS, tmp_path / "store", tokens=1024)
    log = tmp_path / "sweep.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "trajectory", "sweep", str(manifest), "--workers", str(workers)]
    with open(log, "w") as err:  # stderr is a file, not a terminal
        proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=err, timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "\r" not in text  # no bar redraws in a log
    counts = [int(m) for m in re.findall(rf"^trajectory: local units (\d+)/{len(STEPS)} done", text, re.M)]
    assert counts and counts[-1] == len(STEPS), text
    assert counts == sorted(counts) and len(counts) >= (len(STEPS) if workers == 1 else 1), text


def test_the_quick_form_takes_init_and_companions(tokenizer, text_file, tmp_path, capsys):
    import polars as pl

    from trajectory.cli import main
    from trajectory.store import Store

    ckpts = build_checkpoints(tmp_path / "ck", [0, 4], tokenizer, same_as_step0=())
    argv = ["sweep", "--repo", ckpts, "--revisions", "step0,step4", "--random-init", "1", "--init", "hf-default",
            "--companions", "effective_rank", "--text-file", text_file, "--tokens", "1024", "--seq-len", "64",
            "--store", tmp_path / "store", "--no-progress"]  # fmt: skip
    code = main([str(a) for a in argv])
    assert code == 0, capsys.readouterr()
    rows = Store(tmp_path / "store").read()
    drawn = rows.filter(pl.col("arm") == "random-init")
    assert drawn.height > 0 and all(c.startswith("init:hf-default/") for c in drawn["commit"])
    assert rows["effective_rank"].is_not_null().all()


def test_steps_measured_without_companions_say_so_in_their_status(tokenizer, text_file, tmp_path):
    import polars as pl

    from trajectory.config import DataSpec, MetricConfig
    from trajectory.manifest import quick_manifest
    from trajectory.scheduler import SweepOptions, run_sweep
    from trajectory.store import Store

    ckpts = build_checkpoints(tmp_path / "ck", STEPS, tokenizer, same_as_step0=())
    metric = MetricConfig(companions=("effective_rank",), companion_points=2)  # first and last step only
    data = DataSpec("text", str(text_file), "text", 1024, 64)
    manifest = quick_manifest(str(ckpts), [f"step{s}" for s in STEPS], data, metric, str(tmp_path / "store"))
    assert not run_sweep(manifest, SweepOptions(progress=False, device="cpu")).failed
    rows = Store(tmp_path / "store").read()
    middle = rows.filter(pl.col("revision") == f"step{STEPS[1]}")
    ends = rows.filter(pl.col("revision") != f"step{STEPS[1]}")
    assert middle.height > 0 and middle["effective_rank"].is_null().all()
    assert set(middle["status_effective_rank"]) == {"not measured at this step"}
    assert set(ends["status_effective_rank"]) == {"ok"} and ends["effective_rank"].is_not_null().all()
    assert rows["status_swap"].is_null().all()  # a companion never asked for stays empty
