"""What ``measure`` returns: every requested key in every block, ``null`` with a reason where a metric is
undefined, and every interval around the value it accompanies (in the engine's rows, ``--json``, the table,
the store and the report)."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
import torch
from builders import local_manifest, save_tiny, tiny_model
from hubserver import build_checkpoints

from trajectory.cli import main
from trajectory.config import DataSpec, MetricConfig
from trajectory.data.tokens import eval_tokens
from trajectory.engine.measure import COMPANION_KEYS, measure_blocks
from trajectory.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def windows(text_file, tokenizer):
    return eval_tokens(DataSpec("text", str(text_file), tokens=2048, seq_len=64), tokenizer)


def every_key(rows: list[dict], names=tuple(COMPANION_KEYS)) -> None:
    for row in rows:
        for name in names:
            keys = COMPANION_KEYS[name]
            assert set(keys) <= set(row), (name, row["block"])
            assert f"status_{name}" in row


def test_an_encoder_has_every_swap_key_as_null_with_the_reason(windows):
    rows = measure_blocks(tiny_model("bert"), windows, MetricConfig(companions="all"))
    every_key(rows)
    for row in rows:
        assert row["swap_loss"] is None and row["swap_dloss"] is None and row["swap_dppl"] is None
        assert row["status_swap"] == "undefined for an encoder (no next-token loss)"
        assert row["status_ci"] == row["status_effective_rank"] == row["status_linearity_score"] == "ok"
        assert row["r2_lin_cv"] is not None and row["effective_rank"] is not None


def test_a_block_without_a_number_has_every_companion_key_as_null(windows):
    model = tiny_model("gpt_neox")
    with torch.no_grad():
        model.gpt_neox.layers[1].mlp.dense_4h_to_h.bias[0] = float("inf")
    rows = measure_blocks(model, windows, MetricConfig(companions=("ci", "effective_rank")))
    every_key(rows, ("ci", "effective_rank"))
    assert rows[0]["status_ci"] == "ok" and rows[0]["r2_lin_cv"] is not None
    assert rows[1]["r2_lin_cv"] is None and rows[1]["effective_rank"] is None
    assert rows[1]["status_ci"] == "block not measured: nonfinite activations"
    assert "swap_loss" not in rows[0]  # only requested companions appear


def test_cli_json_of_an_encoder_and_the_printed_table(tmp_path, tokenizer, text_file, capsys):
    path = save_tiny(tmp_path / "bert", "bert", 0, tokenizer)
    args = ["measure", str(path), "--text-file", str(text_file), "--tokens", "2048", "--seq-len", "64"]
    assert main([*args, "--companions", "all", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    every_key(out["blocks"])
    assert all(b["swap_dloss"] is None and b["status_swap"].startswith("undefined") for b in out["blocks"])
    assert all(b["r2_lin_inf"] >= b["r2_lin"] for b in out["blocks"])
    assert main([*args, "--companions", "all"]) == 0
    printed = capsys.readouterr().out
    for header in ("r2_inf", "lin_score", "lin_nores", "eff_rank", "r2_cv", "cv_low", "cv_high", "swap_dloss"):
        assert header in printed.splitlines()[1], header
    assert "— swap: undefined for an encoder (no next-token loss)" in printed


def contains(low, value, high) -> bool:
    return low is not None and value is not None and low <= value <= high


def test_every_interval_contains_its_value_in_rows_json_store_and_report(tmp_path, tokenizer, text_file, capsys):
    """The k-fold interval belongs to the k-fold mean ``r2_lin_cv`` and is shown beside it, never beside the
    single-split ``r2_lin`` (which it need not contain)."""
    ckpts = build_checkpoints(tmp_path / "ck", [0, 4], tokenizer, same_as_step0=())
    args = ["measure", str(ckpts), "--revision", "step4", "--text-file", str(text_file), "--tokens", "2048",
            "--seq-len", "64", "--companions", "ci"]  # fmt: skip
    assert main([*args, "--json"]) == 0
    blocks = json.loads(capsys.readouterr().out)["blocks"]
    assert all(contains(b["r2_lin_cv_low"], b["r2_lin_cv"], b["r2_lin_cv_high"]) for b in blocks)
    assert main(args) == 0
    table = capsys.readouterr().out.splitlines()
    cols = table[1].split()
    for line in table[2 : 2 + len(blocks)]:
        cell = dict(zip(cols, line.split()))
        assert contains(float(cell["cv_low"]), float(cell["r2_cv"]), float(cell["cv_high"]))
    toml = local_manifest(tmp_path / "ci.toml", ckpts, text_file, [0, 4], tmp_path / "store",
                          arms=("local", "random-init"), extra='[metric]\ncompanions = ["ci"]')  # fmt: skip
    assert main(["sweep", str(toml), "--no-progress"]) == 0
    rows = Store(tmp_path / "store").read()
    assert rows.height > 0 and rows["r2_lin_cv"].is_not_null().all()
    assert rows.filter(~pl.col("r2_lin_cv").is_between(pl.col("r2_lin_cv_low"), pl.col("r2_lin_cv_high"))).is_empty()
    assert main(["report", str(toml), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    shown = re.findall(r"(\d\.\d{4}) \[(\d\.\d{4}), (\d\.\d{4})\]", md)
    assert len(shown) == 2  # one per block: the k-fold mean at the final step, with its interval
    assert all(float(lo) <= float(v) <= float(hi) for v, lo, hi in shown)
    final = rows.filter((pl.col("arm") == "local") & (pl.col("step") == 4)).sort("block")
    assert [float(v) for v, _, _ in shown] == pytest.approx(final["r2_lin_cv"].to_list(), abs=5e-5)
