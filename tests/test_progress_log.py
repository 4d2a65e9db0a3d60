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
