"""Small conventions users expect: progress bars stay out of logs in every arm; revisions in natural order."""

from __future__ import annotations

import io
import sys

import pytest
from builders import local_manifest, stdlib_text
from hubserver import REPO, build_checkpoints

from trajectory.arms.base import Unit
from trajectory.cli import main
from trajectory.config import Provenance
from trajectory.progress import progress_bar
from trajectory.scheduler import duplicate_groups
from trajectory.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tokenizer):
    return build_checkpoints(tmp_path_factory.mktemp("conv") / "ck", [0, 2], tokenizer, same_as_step0=())


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_draws_on_a_terminal(monkeypatch):
    """The check below can fail: on a terminal the same bar does write carriage returns."""
    monkeypatch.setattr(sys, "stderr", Terminal())
    with progress_bar(3, "units", "unit") as bar:
        for _ in range(3):
            bar.update(1)
    assert "\r" in sys.stderr.getvalue()


@pytest.fixture
def fresh_bars():
    """Progress bars of transformers and huggingface_hub switched on, as in a fresh process."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    was = are_progress_bars_disabled()
    enable_progress_bars()
    hf_logging.enable_progress_bar()
    yield
    if was:
        disable_progress_bars()
        hf_logging.disable_progress_bar()


def test_no_carriage_returns_in_the_log_of_any_arm(hub, ckpts, text_file, tmp_path, capfd, fresh_bars):
    """Every arm (hub downloads, local checkpoints, random-init draws, a twin saving checkpoints), with the
    bars on as a user runs it, writes no ``\\r`` when stderr is not a terminal."""
    train = tmp_path / "train.txt"
    train.write_text(stdlib_text(600_000)[400_000:], encoding="utf-8")
    toml = tmp_path / "all.toml"  # the tokenizer from disk: the Hub stand-in does not serve repo-tree listings
    toml.write_text(f"""
[experiment]
name = "all"
arms = ["hub", "random-init", "twin"]
[model]
repo = "{REPO}"
tokenizer = "{ckpts / "step0"}"
[schedule]
revisions = ["step0", "step2"]
[data]
text_file = "{text_file}"
tokens = 2048
seq_len = 64
[random_init]
seeds = [0, 1]
[twin]
steps = 4
batch_tokens = 256
seq_len = 64
save_checkpoints = true
train_data = "text:{train}"
[sweep]
store = "{tmp_path / "store"}"
""")
    assert main(["sweep", str(toml)]) == 0
    local = local_manifest(tmp_path / "local.toml", ckpts, text_file, [0, 2], tmp_path / "local-store")
    assert main(["sweep", str(local)]) == 0
    out, err = capfd.readouterr()
    arms = set(Store(tmp_path / "store").read()["arm"]) | set(Store(tmp_path / "local-store").read()["arm"])
    assert arms == {"hub", "random-init", "twin", "local"}
    assert "\r" not in err and "\r" not in out, err[-500:]


def test_identical_weight_groups_are_listed_in_natural_order(tmp_path):
    store, units = Store(tmp_path / "s"), []
    for step, weights in [(2, "w2"), (3, "w2"), (10, "w10"), (11, "w10")]:
        prov = Provenance("e", "hub", "m", f"step{step}", step, "c" * 40, "d", "k")
        store.write_unit(prov.key(), [dict(prov.row(), block=0, r2_lin=0.5, status="ok", weights_hash=weights)])
        units.append(Unit(prov))
    assert duplicate_groups(store, units) == [["step2", "step3"], ["step10", "step11"]]


def test_a_missing_local_revision_names_what_the_folder_has_in_natural_order(tmp_path, capsys, monkeypatch):
    for name in ("step0", "step10", "step2", "step100"):
        (tmp_path / "runs" / name).mkdir(parents=True)
    code = main(["measure", str(tmp_path / "runs"), "--revision", "step7", "--text-file", str(tmp_path / "x.txt")])
    err = capsys.readouterr().err
    assert code == 2 and "(has: step0, step2, step10, step100)" in err and "hub" not in err.lower(), err
    monkeypatch.chdir(tmp_path)  # runs/step7: shaped like ORG/NAME, but runs/ is a local folder
    code = main(["measure", "runs/step7", "--text-file", "x.txt"])
    err = capsys.readouterr().err
    assert code == 2 and "no local directory runs/step7 (runs has: step0, step2, step10, step100)" in err, err
    assert "cache" not in err and "unreachable" not in err
