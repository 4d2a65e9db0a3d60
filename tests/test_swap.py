"""The linear-swap Δloss against an independent module substitution."""

import copy

import numpy as np
import pytest
import torch
from builders import tiny_model

from trajectory.config import DataSpec
from trajectory.data.tokens import eval_tokens
from trajectory.engine.adapters import adapter_for
from trajectory.engine.probe import FFNProbe
from trajectory.engine.stats import fit_affine
from trajectory.engine.swap import lm_loss, swap_losses


@pytest.fixture(scope="module")
def windows(text_file, tokenizer):
    return eval_tokens(DataSpec("text", str(text_file), tokens=2048, seq_len=64), tokenizer).ids


def fits_for(model, ids):
    adapter = adapter_for(model.config.model_type)
    is_test = np.zeros(len(ids), bool)
    is_test[-8:] = True
    probe = FFNProbe(model, adapter)
    probe.run(ids, is_test, batch_size=8)
    return adapter, [fit_affine(s.train) for s in probe.stats], ids[is_test]


class Affine(torch.nn.Module):
    def __init__(self, fit):
        super().__init__()
        self.w = torch.tensor(fit.w, dtype=torch.float32)
        self.b = torch.tensor(fit.b, dtype=torch.float32)

    def forward(self, x):
        return x @ self.w + self.b


def test_swap_loss_equals_replacing_the_module(windows):
    model = tiny_model("gpt_neox", seed=2)
    adapter, fits, heldout = fits_for(model, windows)
    got = swap_losses(model, adapter, fits, heldout, batch_size=4)
    base = lm_loss(model, heldout, 4)
    for block, fit in enumerate(fits):
        twin = copy.deepcopy(model)
        twin.gpt_neox.layers[block].mlp = Affine(fit)
        with torch.no_grad():
            ref = twin(input_ids=torch.as_tensor(heldout), labels=torch.as_tensor(heldout)).loss.item()
        assert got[block]["swap_loss"] == pytest.approx(ref, abs=1e-5)
        assert got[block]["swap_dloss"] == pytest.approx(ref - base, abs=1e-5)
    assert lm_loss(model, heldout, 4) == pytest.approx(base, abs=1e-12)  # hooks were removed


def test_an_affine_ffn_swaps_for_free(windows):
    model = tiny_model("gpt_neox", seed=3, hidden_act="linear")
    adapter, fits, heldout = fits_for(model, windows)
    for row in swap_losses(model, adapter, fits, heldout, batch_size=4):
        assert abs(row["swap_dloss"]) < 1e-4


def test_swap_alone_uses_the_one_pass_fit_and_matches_the_moment_path(text_file, tokenizer):
    """With only 'swap' asked for, R²_lin is scored in one pass and the swap reuses that pass's fit; it must
    give the Δloss that the moment path (taken when effective_rank is asked for too) gives."""
    from trajectory.config import MetricConfig
    from trajectory.engine.measure import measure_blocks

    tokens = eval_tokens(DataSpec("text", str(text_file), tokens=2048, seq_len=64), tokenizer)
    model = tiny_model("gpt_neox", seed=2)
    one = measure_blocks(model, tokens, MetricConfig(companions=("swap",), compute_dtype="float64"))
    both = measure_blocks(model, tokens, MetricConfig(companions=("swap", "effective_rank"), compute_dtype="float64"))
    for a, b in zip(one, both):
        assert a["swap_dloss"] == pytest.approx(b["swap_dloss"], abs=1e-6) and a["swap_dloss"] != 0.0
        assert a["r2_lin"] == pytest.approx(b["r2_lin"], abs=1e-9) and "effective_rank" not in a
