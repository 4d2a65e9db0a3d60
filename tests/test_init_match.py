"""A band that matches the run: ``[random_init] init``, and the step-0 check that catches a band of another init.

Issue 13's case, tiny: a GPT-NeoX drawn with Hugging Face's default init (N(0, 0.02)) and trained a few steps,
saved as local checkpoints step0/step2/step4/step6; a random-init band drawn with GPT-NeoX's own small_init /
wang_init sits far below its step 0.  Nothing in the trained arm may then be called learned.
"""

from __future__ import annotations

import json

import pytest
import torch
from builders import local_manifest, tiny_config

from trajectory.cli import main
from trajectory.engine.models import fresh_model, init_name
from trajectory.errors import ConfigError
from trajectory.manifest import load_manifest
from trajectory.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = [0, 2, 4, 6]


@pytest.fixture(scope="module")
def hf_default_run(tmp_path_factory, tokenizer):
    """Local checkpoints of a run that started from the HF default init (a few AdamW updates apart)."""
    root = tmp_path_factory.mktemp("hfinit") / "ck"
    model = fresh_model(tiny_config("gpt_neox"), 0, with_head=True, init="hf-default").train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(STEPS[-1] + 1):
        if step in STEPS:
            model.save_pretrained(root / f"step{step}")
            tokenizer.save_pretrained(root / f"step{step}")
        ids = torch.randint(0, 300, (8, 64), generator=gen)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    return root


def report_json(toml, capsys) -> dict:
    assert main(["sweep", str(toml), "--no-progress"]) in (0,), capsys.readouterr().err
    capsys.readouterr()
    assert main(["report", str(toml), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_band_of_another_init_makes_every_block_undetermined_with_a_warning(
    hf_default_run, text_file, tmp_path, capsys
):
    toml = local_manifest(tmp_path / "mismatch.toml", hf_default_run, text_file, STEPS, tmp_path / "store",
                          arms=("local", "random-init"))  # fmt: skip
    out = report_json(toml, capsys)
    assert len(out["warnings"]) == 1 and "step 0 of local lies outside its random-init band" in out["warnings"][0]
    local = [b for b in out["blocks"] if b["arm"] == "local"]
    assert len(local) == 2 and all(b["verdict"] == "undetermined" and b["warnings"] for b in local)
    assert all(b["first_exit_step"] == 0 for b in local)  # step 0 itself is outside the gpt-neox band
    commits = set(Store(tmp_path / "store").read().filter(arm="random-init")["commit"])
    assert len(commits) == 1 and commits.pop().startswith("init:gpt-neox/config:")


def test_the_matching_init_clears_the_warning_and_sets_the_other_draws_aside(
    hf_default_run, text_file, tmp_path, capsys
):
    """The same store, the manifest now saying ``init = "hf-default"``: new random-init units (their commit names
    the init), the old gpt-neox draws set aside, step 0 inside its band, no warning."""
    store = tmp_path / "store"
    first = local_manifest(tmp_path / "a.toml", hf_default_run, text_file, STEPS, store, arms=("local", "random-init"))
    report_json(first, capsys)
    toml = local_manifest(tmp_path / "a.toml", hf_default_run, text_file, STEPS, store,
                          arms=("local", "random-init"), extra='[random_init]\ninit = "hf-default"')  # fmt: skip
    out = report_json(toml, capsys)
    assert out["warnings"] == [] and all(not b["warnings"] for b in out["blocks"])
    inits = {c.split("/")[0] for c in Store(store).read().filter(arm="random-init")["commit"]}
    assert inits == {"init:gpt-neox", "init:hf-default"}
    assert main(["report", str(toml), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Warnings" not in md and "random-init rows drawn with init `gpt-neox`" in md
    assert "Random-init draws: init `hf-default`" in md


def test_init_settings_are_checked(tmp_path):
    base = '[experiment]\nname = "x"\narms = ["random-init"]\n[model]\nrepo = "a/b"\n[random_init]\n'
    for bad, field in (('init = "xavier"', "'init'"), ("coverage = 1.5", "'coverage'"), ("coverage = 0", "'coverage'")):
        (tmp_path / "m.toml").write_text(base + bad)
        with pytest.raises(ConfigError, match=f"\\[random_init\\] {field} must be"):
            load_manifest(tmp_path / "m.toml")
    (tmp_path / "m.toml").write_text(base + 'init = "hf-default"\ncoverage = 0.9')
    manifest = load_manifest(tmp_path / "m.toml")
    assert (manifest.init_scheme, manifest.band_coverage) == ("hf-default", 0.9)
    assert init_name(tiny_config("gpt_neox")) == "gpt-neox" and init_name(tiny_config("gpt2")) == "hf-default"
    with pytest.raises(ConfigError, match="GPT-NeoX's"):
        init_name(tiny_config("gpt2"), "gpt-neox")


def test_hf_default_is_the_libraries_own_draw():
    cfg = tiny_config("gpt_neox")
    hf = fresh_model(cfg, 3, init="hf-default")
    std = hf.layers[0].mlp.dense_h_to_4h.weight.std().item()
    assert std == pytest.approx(cfg.initializer_range, rel=0.05)  # N(0, 0.02), not small_init's √(2/5d) = 0.11
    real = fresh_model(cfg, 3).layers[0].mlp.dense_h_to_4h.weight.std().item()
    assert real == pytest.approx((2 / (5 * cfg.hidden_size)) ** 0.5, rel=0.05)
