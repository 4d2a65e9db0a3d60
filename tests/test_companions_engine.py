"""Companion metrics through the probe and the CLI, against numpy on stored activations."""

import json

import numpy as np
import pytest
import torch
from builders import tiny_model
from test_companions import paper_score
from test_engine import stored_activations

from trajectory.cli import main
from trajectory.config import DataSpec, MetricConfig
from trajectory.data.tokens import eval_tokens
from trajectory.engine.measure import groups_of, measure_blocks, split_by_document

BLOCKS = {
    "gpt_neox": lambda m: m.gpt_neox.layers,
    "gpt2": lambda m: m.transformer.h,
    "llama": lambda m: m.model.layers,
    "bert": lambda m: m.encoder.layer,
}


@pytest.fixture(scope="module")
def windows(text_file, tokenizer):
    return eval_tokens(DataSpec("text", str(text_file), tokens=4096, seq_len=64), tokenizer)


def residual_states(model, model_type, ids):
    """(h_l, h_{l+1}) of every block for every token, kept in memory."""
    pairs = []
    hooks = [
        b.register_forward_hook(
            lambda m, a, o: pairs.append(
                (
                    a[0].flatten(0, 1).double().numpy(),
                    (o[0] if isinstance(o, tuple) else o).flatten(0, 1).double().numpy(),
                )
            )
        )
        for b in BLOCKS[model_type](model)
    ]
    with torch.no_grad():
        model(input_ids=torch.as_tensor(ids))
    for h in hooks:
        h.remove()
    return pairs


@pytest.mark.parametrize("model_type", sorted(BLOCKS))
def test_linearity_score_equals_the_papers_definition_on_every_family(model_type, windows):
    model = tiny_model(model_type)
    got = measure_blocks(model, windows, MetricConfig(companions=("linearity_score",)))
    for row, (h0, h1) in zip(got, residual_states(model, model_type, windows.ids)):
        assert row["linearity_score"] == pytest.approx(paper_score(h0, h1), abs=1e-6)
        assert row["linearity_score_nores"] == pytest.approx(paper_score(h0, h1 - h0), abs=1e-6)


def test_kfold_interval_and_effective_rank_from_one_pass(windows):
    model = tiny_model("gpt_neox")
    # float64 products: the moment path (taken for these companions) and the one-pass path (plain R²_lin) then
    # agree to rounding, so tracking folds provably leaves the main split's numbers alone
    cfg = MetricConfig(companions=("ci", "effective_rank"), folds=4, seed=2, compute_dtype="float64")
    got = measure_blocks(model, windows, cfg)
    plain = measure_blocks(model, windows, MetricConfig(seed=2, compute_dtype="float64"))
    folds = groups_of(split_by_document(windows, cfg), cfg) % cfg.folds
    x, y = stored_activations(model, "gpt_neox", windows.ids)[0]  # block 0: (n_seq, seq, d)
    scores = []
    for f in range(4):
        tr, te = folds != f, folds == f
        a = np.hstack([x[tr].reshape(-1, 32), np.ones((tr.sum() * 64, 1))])
        beta = np.linalg.lstsq(a, y[tr].reshape(-1, 32), rcond=1e-6)[0]
        resid = y[te].reshape(-1, 32) - np.hstack([x[te].reshape(-1, 32), np.ones((te.sum() * 64, 1))]) @ beta
        yt = y[te].reshape(-1, 32)
        scores.append(1 - (resid**2).sum() / ((yt - yt.mean(0)) ** 2).sum())
    assert got[0]["r2_lin_cv"] == pytest.approx(np.mean(scores), abs=1e-6)
    assert got[0]["r2_lin_cv_low"] < got[0]["r2_lin_cv"] < got[0]["r2_lin_cv_high"]
    for g, p in zip(got, plain):  # the main split's numbers do not change when folds are tracked too
        assert g["r2_lin"] == pytest.approx(p["r2_lin"], abs=1e-9)
        assert 1 <= g["effective_rank"] <= 32


def test_cli_json_carries_every_companion_key(capsys, tiny_dir, text_file):
    code = main(
        [
            "measure",
            str(tiny_dir),
            "--text-file",
            str(text_file),
            "--tokens",
            "2048",
            "--seq-len",
            "64",
            "--companions",
            "all",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    for block in json.loads(out)["blocks"]:
        for key in (
            "linearity_score",
            "linearity_score_nores",
            "swap_dloss",
            "r2_lin_cv_low",
            "r2_lin_cv_high",
            "effective_rank",
        ):
            assert block[key] is not None, key
        assert block["r2_lin_cv_low"] <= block["r2_lin_cv_high"]


def test_unknown_companion_is_one_line(capsys, tiny_dir, text_file):
    code = main(["measure", str(tiny_dir), "--text-file", str(text_file), "--companions", "vibes"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown companion metric 'vibes'" in err
