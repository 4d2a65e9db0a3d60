"""With no network every command fails within seconds, in one line: the Hub is asked once, with a short
timeout and no retries (:mod:`trajectory.online`), and what is not in the cache is said so at once."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from hubserver import point_client_at

from trajectory.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """The client points at a port nobody listens on, HF_HUB_OFFLINE unset: what a machine off the network sees."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: connections are refused at once
    point_client_at(monkeypatch, f"http://127.0.0.1:{port}", tmp_path / "cache", offline=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def fast_one_line(capsys, *argv, limit: float = 5.0) -> str:
    start = time.perf_counter()
    code = main([str(a) for a in argv])
    took = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (code, out, err)
    assert took < limit, f"took {took:.1f} s: {err}"
    return err


def test_measure_of_a_hub_id_offline_fails_within_seconds(no_network, text_file, capsys):
    err = fast_one_line(capsys, "measure", "EleutherAI/pythia-160m", "--text-file", text_file)
    assert "not reachable as a Hub id" in err and "unreachable" in err


def test_a_random_init_sweep_of_a_hub_model_offline_fails_within_seconds(no_network, tmp_path, capsys):
    manifest = ROOT / "manifests" / "pythia-160m.toml"
    err = fast_one_line(capsys, "sweep", manifest, "--arms", "random-init", "--store", tmp_path / "s", "--no-progress")
    assert "unreachable" in err


def test_the_paper_preset_offline_fails_within_seconds(no_network, tiny_dir, capsys):
    err = fast_one_line(capsys, "measure", tiny_dir, "--preset", "paper")
    assert "wikitext" in err and "cache" in err


def test_a_relative_path_that_names_no_folder_is_one_line_saying_so(
    no_network, text_file, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    err = fast_one_line(capsys, "measure", "runs/mine", "--text-file", text_file)
    assert "no such folder" in err and "not reachable as a Hub id" in err
