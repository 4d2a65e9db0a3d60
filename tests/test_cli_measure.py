"""`trajectory measure` driven in-process, as a user would run it."""

import json

import pytest
from builders import LLAMA_LIKE, save_tiny

from trajectory.cli import main
from trajectory.config import DataSpec, MetricConfig
from trajectory.data.tokens import eval_tokens
from trajectory.engine.measure import measure_blocks
from trajectory.sources.loading import load_model, load_tokenizer


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("precision", [None, "float64"])
def test_json_output_equals_the_python_api(capsys, tiny_dir, text_file, tokenizer, precision):
    flags = ["--precision", precision] if precision else []
    code, out, err = run(
        capsys,
        "measure",
        tiny_dir,
        "--text-file",
        text_file,
        "--tokens",
        2048,
        "--seq-len",
        64,
        "--seed",
        4,
        "--json",
        *flags,
    )
    assert code == 0, err
    result = json.loads(out)
    assert set(result) >= {"model", "revision", "data_hash", "blocks"}
    model, _ = load_model(str(tiny_dir))
    tokens = eval_tokens(DataSpec("text", str(text_file), tokens=2048, seq_len=64), tokenizer)
    expected = measure_blocks(model, tokens, MetricConfig(seed=4, compute_dtype=precision or "mixed"))
    other = measure_blocks(model, tokens, MetricConfig(seed=4, compute_dtype="mixed" if precision else "float64"))
    assert max(abs(a["r2_lin"] - b["r2_lin"]) for a, b in zip(expected, other)) > 1e-12  # the flag is visible
    assert result["data_hash"] == tokens.data_hash
    assert [b["block"] for b in result["blocks"]] == [0, 1]
    for got, want in zip(result["blocks"], expected):
        assert set(got) >= {"r2_lin", "r2_lin_global", "r2_median_dim", "n_train", "n_test", "cond"}
        assert got["r2_lin"] == pytest.approx(want["r2_lin"], abs=1e-12)


def test_table_output_names_every_block(capsys, tiny_dir, text_file):
    code, out, _ = run(capsys, "measure", tiny_dir, "--text-file", text_file, "--tokens", 1024, "--seq-len", 64)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[1].split()[:2] == ["block", "r2_lin"] and [ln.split()[0] for ln in lines[2:]] == ["0", "1"]


def one_line_error(code, out, err):
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_unsupported_architecture_names_the_supported_ones(capsys, tmp_path, text_file):
    from transformers import OPTConfig

    OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2).save_pretrained(tmp_path)
    err = one_line_error(*run(capsys, "measure", tmp_path, "--text-file", text_file))
    assert "'opt'" in err and "gpt_neox" in err and "bert" in err


@pytest.mark.parametrize("model_type", LLAMA_LIKE)
def test_llama_like_families_are_measured(capsys, tmp_path, text_file, tokenizer, model_type):
    """The issue's user story: `measure` of a Qwen2- (Mistral-, OLMo-, OLMo-2-) built model gives its numbers."""
    folder = save_tiny(tmp_path / model_type, model_type, 0, tokenizer)
    argv = ["measure", folder, "--text-file", text_file, "--tokens", 2048, "--seq-len", 64, "--json"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    model, _ = load_model(str(folder))
    assert model.config.model_type == model_type
    # the folder's tokenizer as transformers loads it (for model_type qwen2, transformers 5 loads Qwen2Tokenizer
    # whatever class was saved, and its pre-tokenizer cuts the same text differently)
    tokens = eval_tokens(DataSpec("text", str(text_file), tokens=2048, seq_len=64), load_tokenizer(str(folder)))
    want = measure_blocks(model, tokens, MetricConfig())
    result = json.loads(out)
    got = result["blocks"]
    assert result["data_hash"] == tokens.data_hash and [b["block"] for b in got] == [0, 1]
    assert [b["r2_lin"] for b in got] == pytest.approx([b["r2_lin"] for b in want], abs=1e-12)


def test_too_few_train_tokens_says_how_many_are_needed(capsys, tiny_dir, text_file):
    err = one_line_error(*run(capsys, "measure", tiny_dir, "--text-file", text_file, "--tokens", 32, "--seq-len", 8))
    assert "24 train tokens" in err and "at least 34" in err


@pytest.mark.parametrize("content", [None, "", "\n\n  \n"])
def test_missing_or_empty_text_file(capsys, tiny_dir, tmp_path, content):
    path = tmp_path / "eval.txt"
    if content is not None:
        path.write_text(content)
    err = one_line_error(*run(capsys, "measure", tiny_dir, "--text-file", path))
    assert str(path) in err


def test_revision_that_does_not_exist_in_a_local_checkpoint_directory(capsys, tiny_dir, text_file):
    err = one_line_error(*run(capsys, "measure", tiny_dir.parent, "--revision", "step999", "--text-file", text_file))
    assert "'step999' does not exist" in err and "neox" in err


def test_local_checkpoint_directory_revision_is_measured(capsys, tiny_dir, text_file):
    code, out, _ = run(
        capsys,
        "measure",
        tiny_dir.parent,
        "--revision",
        tiny_dir.name,
        "--text-file",
        text_file,
        "--tokens",
        1024,
        "--seq-len",
        64,
        "--json",
    )
    assert code == 0 and len(json.loads(out)["blocks"]) == 2


def test_hub_id_offline_and_uncached_fails_in_one_line(capsys, text_file):
    err = one_line_error(*run(capsys, "measure", "EleutherAI/pythia-14m", "--text-file", text_file))
    assert "EleutherAI/pythia-14m" in err or "unreachable" in err
