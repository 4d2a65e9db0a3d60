"""Evaluation text from a Hub dataset (``--dataset REPO:PATH``) and the paper preset, over the local Hub."""

import io
import json

import polars as pl
import pytest
from builders import stdlib_text
from hubserver import HubServer, HubState, point_client_at

from trajectory.cli import PRESETS, main

WIKITEXT = PRESETS["paper"]["dataset"]


def parquet_bytes(lines: list[str]) -> bytes:
    buf = io.BytesIO()
    pl.DataFrame({"text": lines}).write_parquet(buf)
    return buf.getvalue()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The local Hub, serving WikiText's path as a dataset repo of stdlib text lines."""
    repo, path = WIKITEXT.split(":", 1)
    lines = [ln for ln in stdlib_text(300_000).splitlines() if ln.strip()]
    state = HubState()
    state.add_revision(f"datasets/{repo}", "main", {path: parquet_bytes(lines)})
    with HubServer(state) as server:
        point_client_at(monkeypatch, server.endpoint, tmp_path / "cache")
        yield state, lines


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_dataset_source_equals_the_same_text_from_a_local_parquet(hub, capsys, tiny_dir, tmp_path):
    state, lines = hub
    local = tmp_path / "same.parquet"
    local.write_bytes(parquet_bytes(lines))
    common = ["--tokens", 2048, "--seq-len", 64, "--json"]
    code, out, err = run(capsys, "measure", tiny_dir, "--dataset", WIKITEXT, *common)
    assert code == 0, err
    code, out_local, _ = run(capsys, "measure", tiny_dir, "--parquet", local, "--column", "text", *common)
    a, b = json.loads(out), json.loads(out_local)
    assert a["data_hash"] == b["data_hash"] and a["blocks"] == b["blocks"]
    assert any(r.path.endswith(".parquet") for r in state.requests)


def test_paper_preset_uses_wikitext_128_token_windows_and_the_last_fifth_held_out(hub, capsys, tiny_dir):
    code, out, err = run(capsys, "measure", tiny_dir, "--preset", "paper", "--json")
    assert code == 0, err
    blocks = json.loads(out)["blocks"]
    n_seq = 15_000 // 128
    assert blocks[0]["n_test"] == round(n_seq * 0.2) * 128
    assert blocks[0]["n_train"] + blocks[0]["n_test"] == n_seq * 128


def test_bad_dataset_spec_is_one_line(capsys, tiny_dir):
    code, out, err = run(capsys, "measure", tiny_dir, "--dataset", "no-colon-here")
    assert code == 2 and "REPO:PATH" in err and len(err.strip().splitlines()) == 1
