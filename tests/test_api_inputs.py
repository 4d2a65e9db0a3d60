"""``tj.measure`` checks what the CLI checks, refuses what it would ignore, and every refusal is one
:class:`TrajectoryError` line worded for a Python caller (argument names, never CLI flags)."""

from __future__ import annotations

import pytest
import torch
from builders import TINY, tiny_model

import trajectory as tj
from trajectory.errors import TrajectoryError

pytestmark = pytest.mark.usefixtures("one_thread")

CLI_FLAG = ("--tokens", "--seq-len", "seq-len", "--device", "--allow-long", "--heldout-frac")


def refused(**kwargs) -> str:
    with pytest.raises(TrajectoryError) as err:
        tj.measure(**kwargs)
    message = str(err.value)
    assert "\n" not in message and not any(flag in message for flag in CLI_FLAG), message
    return message


@pytest.fixture(scope="module")
def model():
    return tiny_model("gpt_neox", seed=1)


@pytest.fixture(scope="module")
def text(text_file):
    return text_file.read_text(encoding="utf-8")


def test_seq_len_beyond_the_models_positions_is_refused_as_the_cli_refuses_it(model, tokenizer, text):
    too_long = TINY["positions"] * 2
    message = refused(model=model, tokenizer=tokenizer, text=text, n_tokens=4 * too_long, seq_len=too_long)
    assert "max_position_embeddings" in message and "allow_long=True" in message
    df = tj.measure(model, tokenizer, text=text, n_tokens=4 * too_long, seq_len=too_long, allow_long=True)
    assert df.height == model.config.num_hidden_layers


def test_too_few_tokens_names_the_argument_not_the_flag(model, tokenizer, text):
    assert "n_tokens" in refused(model=model, tokenizer=tokenizer, text=text, n_tokens=64, seq_len=32)


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(model=None), "model"),
        (dict(model="not a model object".split()), "model"),
        (dict(n_tokens="2048"), "n_tokens"),
        (dict(n_tokens=2048.0), "n_tokens"),
        (dict(seq_len=True), "seq_len"),
        (dict(device="tpu"), "device"),
        (dict(companions=None), "companions"),
        (dict(text=None, tokens=[[1, 2, 3], [4, 5]]), "tokens"),  # ragged
        (dict(text=None, tokens=[]), "empty"),
    ],
)
def test_each_bad_argument_is_one_trajectory_error_line_naming_it(model, tokenizer, text, change, needle):
    kwargs = dict(model=model, tokenizer=tokenizer, text=text, n_tokens=2048, seq_len=64) | change
    if "tokens" in change:
        kwargs.pop("n_tokens")
    message = refused(**kwargs)
    assert needle in message, message
    assert "dtype float64" not in message


def test_a_model_on_the_meta_device_is_refused(tokenizer, text):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(tiny_model("gpt_neox").config)
    assert "meta" in refused(model=meta, tokenizer=tokenizer, text=text, n_tokens=2048, seq_len=64)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (dict(tokenizer="tok"), "tokenizer"),
        (dict(text="some text"), "text"),
        (dict(tokens=[1, 2, 3]), "tokens"),
    ],
)
def test_a_model_by_name_refuses_the_arguments_it_would_ignore(tiny_dir, text_file, extra, needle):
    """Given by name, the model brings its own tokenizer and reads ``text_file`` only."""
    message = refused(model=str(tiny_dir), text_file=text_file, n_tokens=2048, seq_len=64, **extra)
    assert needle in message and "ignore" in message


def test_a_model_object_refuses_a_revision(model, tokenizer, text):
    message = refused(model=model, tokenizer=tokenizer, text=text, n_tokens=2048, seq_len=64, revision="step1")
    assert "revision" in message and "ignore" in message
