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


def test_paper_preset_holds_out_the_last_documents_of_the_windows(hub, capsys, tiny_dir):
    """The held-out windows are those of the last documents (in the windows' order) that reach round(0.2 · n)
    windows: R²_lin equals numpy lstsq fitted on the other windows and scored on those, and not the other way
    round.  The mask is built here from the windows' documents, walking back from the last one."""
    import numpy as np
    from test_engine import stored_activations
    from test_stats import lstsq_r2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trajectory.cli.args import PRESETS
    from trajectory.config import DataSpec
    from trajectory.data.tokens import eval_tokens

    code, out, err = run(capsys, "measure", tiny_dir, "--preset", "paper", "--json")
    assert code == 0, err
    blocks = json.loads(out)["blocks"]
    preset = PRESETS["paper"]
    spec = DataSpec("dataset", preset["dataset"], preset["column"], preset["tokens"], preset["seq_len"])
    tokens = eval_tokens(spec, AutoTokenizer.from_pretrained(tiny_dir))
    n_seq, n_test = tokens.ids.shape[0], round(0.2 * tokens.ids.shape[0])
    is_test = np.zeros(n_seq, dtype=bool)
    for d in dict.fromkeys(tokens.doc[::-1]):  # documents from the last one back
        if is_test.sum() >= n_test:
            break
        is_test |= tokens.doc == d
    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    for block, (x, y) in zip(blocks, stored_activations(model, "gpt_neox", tokens.ids), strict=True):
        d = x.shape[-1]
        tail, _ = lstsq_r2(*(a.reshape(-1, d) for a in (x[~is_test], y[~is_test], x[is_test], y[is_test])))
        head, _ = lstsq_r2(*(a.reshape(-1, d) for a in (x[is_test], y[is_test], x[~is_test], y[~is_test])))
        assert block["r2_lin"] == pytest.approx(tail, abs=1e-6)
        assert abs(head - tail) > 1e-4  # the other split gives another number: the check can tell them apart
        assert block["n_test"] == is_test.sum() * 128
