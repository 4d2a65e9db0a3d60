"""The Python API as a notebook uses it: ``import trajectory as tj``."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch
from builders import tiny_model

import trajectory as tj

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_public_names_are_there_and_documented():
    assert {"measure", "load_manifest", "sweep", "results", "verdict", "__version__"} <= set(dir(tj))
    for name in tj.__all__:
        obj = getattr(tj, name)
        assert name == "__version__" or (obj.__doc__ or "").strip(), name
    with pytest.raises(AttributeError):
        tj.not_a_name  # noqa: B018


def test_measure_mid_training_equals_the_cli_on_the_same_weights_and_keeps_training_flags(
    tmp_path, tokenizer, text_file, capsys
):
    from trajectory.cli import main

    model = tiny_model("gpt_neox", seed=3, hidden_dropout=0.1, attention_dropout=0.1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 300, (4, 32), generator=torch.Generator().manual_seed(0))
    for _ in range(3):  # a few real updates: the weights are no longer the initial draw
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    model.gpt_neox.layers[1].eval()  # a caller's own mix of modes must survive too
    flags = {name: m.training for name, m in model.named_modules()}

    df = tj.measure(model, tokenizer, text_file=text_file, n_tokens=2048, seq_len=64)

    assert {name: m.training for name, m in model.named_modules()} == flags
    assert isinstance(df, pl.DataFrame) and df["block"].to_list() == [0, 1]
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    code = main(["measure", str(tmp_path / "ckpt"), "--text-file", str(text_file), "--tokens", "2048",
                 "--seq-len", "64", "--json"])  # fmt: skip
    cli = json.loads(capsys.readouterr().out)
    assert code == 0 and cli["data_hash"] == df["data_hash"][0]
    for row, block in zip(df.iter_rows(named=True), cli["blocks"]):
        for key in ("r2_lin", "r2_lin_global", "r2_median_dim", "n_train", "n_test", "rank"):
            assert row[key] == pytest.approx(block[key], abs=1e-9), key


def test_measure_takes_text_or_token_ids_and_rejects_ambiguity(tokenizer, text_file):
    model = tiny_model("gpt_neox", seed=1)
    text = text_file.read_text()
    a = tj.measure(model, tokenizer, text=text, n_tokens=2048, seq_len=64)
    b = tj.measure(model, tokenizer, text_file=text_file, n_tokens=2048, seq_len=64)
    assert a["r2_lin"].to_list() == b["r2_lin"].to_list()
    ids = tokenizer(text[:200_000])["input_ids"][:2048]
    c = tj.measure(model, tokens=ids, seq_len=64)
    assert c.height == 2 and c["n_train"].sum() > 0
    with pytest.raises(tj.ConfigError, match="exactly one of"):
        tj.measure(model, tokenizer, text=text, text_file=text_file)
    with pytest.raises(tj.DataError, match="train tokens"):
        tj.measure(model, tokens=ids[:32], seq_len=16)  # 16 train rows: too few for the 33 parameters per output


def test_results_and_verdict_read_a_store(tmp_path):
    from synthetic import build_store

    build_store(tmp_path / "store")
    rows = tj.results(tmp_path / "store")
    assert rows.height > 0 and set(rows["arm"]) >= {"hub", "random-init"}
    table = tj.verdict(tmp_path / "store")
    assert set(table["arm"]) >= {"hub"} and "z" in table.columns


def test_verdict_of_a_manifest_whose_revisions_were_discovered_reads_the_recorded_schedule(tmp_path):
    """``rule = "branches"`` finds its revisions when a sweep plans, and records them in the store; ``tj.verdict``
    reads that record as ``trajectory report`` does (it raised "none have been found yet"), so the arm's length
    of training is the discovered schedule's last step."""
    from synthetic import series_store

    from trajectory.config import Schedule

    series_store(tmp_path / "store", {0: {s: (0.9 if s >= 2000 else 0.5) for s in (1000, 2000, 3000, 4000)}})
    path = tmp_path / "olmo.toml"
    path.write_text(
        '[experiment]\nname = "synth"\narms = ["hub", "random-init"]\n[model]\nrepo = "allenai/OLMo-1B-hf"\n'
        '[schedule]\nrule = "branches"\n[data]\ntext_file = "eval.txt"\n'
        f'[sweep]\nstore = "{tmp_path / "store"}"\n'
    )
    manifest = tj.load_manifest(path)
    points = tuple((s, f"step{s}-tokens{s // 250}B") for s in (1000, 2000, 3000, 8000))
    tj.Store(tmp_path / "store").write_schedule(manifest, Schedule(points, (4, 8, 12, 32), manifest.schedule.rule))
    row = tj.verdict(path).row(0, named=True)
    assert row["final_step"] == 4000 and row["persistent_fraction"] == pytest.approx(2000 / 8000)
