"""Every input of the "What happens when …" list (docs/reliability.md) that used to end in a traceback: the real
CLI, driven in-process, answers one ``trajectory: …`` line on stderr, nothing on stdout, exit status 2, and writes
nothing (no store folder, no partial file: the tree under the test's folder is byte-for-byte what it was)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from builders import save_tiny, tiny_model

from trajectory.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--tokens", "1024", "--seq-len", "64"]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def refused(capsys, root: Path, *argv) -> str:
    """Run the CLI; assert the one-line contract and that nothing under ``root`` changed; return the line."""
    before = snapshot(root)
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trajectory: ") and "Traceback" not in err, err
    assert snapshot(root) == before, "something was written"
    return lines[0]


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty working folder (the default ``store/<name>`` and ``figures/<name>`` would land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tiny_dir) -> Path:
    """A folder of checkpoints with one revision, ``step0``: what ``sweep --repo DIR --revisions step0`` reads."""
    root = tmp_path_factory.mktemp("ckpts")
    shutil.copytree(tiny_dir, root / "step0")
    return root


def copy_model(tiny_dir: Path, dest: Path) -> Path:
    shutil.copytree(tiny_dir, dest)
    return dest


# -- weights and configs -------------------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _to_truncated_bin(folder: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    _truncate(folder / "pytorch_model.bin")


DAMAGE = {
    "truncated safetensors": lambda d: _truncate(d / "model.safetensors"),
    "empty safetensors": lambda d: (d / "model.safetensors").write_bytes(b""),
    "garbage safetensors": lambda d: (d / "model.safetensors").write_bytes(os.urandom(4096)),
    "truncated bin": _to_truncated_bin,
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_weights_are_one_line(capsys, work, tiny_dir, text_file, damage):
    model = copy_model(tiny_dir, work / "model")
    DAMAGE[damage](model)
    err = refused(capsys, work, "measure", model, "--text-file", text_file, *SMALL)
    assert "cannot read the weights of" in err and str(model) in err


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


MISMATCH = {
    "wider": (dict(hidden_size=64, intermediate_size=256), "does not match its weights"),
    "more layers": (dict(num_hidden_layers=3), "lack"),  # transformers would draw block 2 at random
    "fewer layers": (dict(num_hidden_layers=1), "hold blocks its config does not have"),
}


@pytest.mark.parametrize("case", MISMATCH, ids=list(MISMATCH))
def test_a_config_that_does_not_match_the_weights_is_one_line(capsys, work, tiny_dir, text_file, case):
    model = copy_model(tiny_dir, work / "model")
    changes, needle = MISMATCH[case]
    _edit_config(model, **changes)
    assert needle in refused(capsys, work, "measure", model, "--text-file", text_file, *SMALL)


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory, tokenizer):
    """A consistent model (config and weights) of 100 ids, saved with the tests' 320-id tokenizer."""
    folder = tmp_path_factory.mktemp("vocab") / "step0"
    tiny_model("gpt_neox", 0, vocab_size=100).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_tokenizer_ids_beyond_the_vocabulary_are_one_line(capsys, work, small_vocab, text_file):
    err = refused(capsys, work, "measure", small_vocab, "--text-file", text_file, *SMALL)
    assert "outside the model's 100 embeddings" in err
    err = refused(capsys, work, "sweep", "--repo", small_vocab.parent, "--revisions", "step0",
                  "--text-file", text_file, *SMALL, "--no-progress")  # fmt: skip
    assert "outside the model's 100 embeddings" in err and not (work / "store").exists()


def test_a_model_folder_without_tokenizer_files_is_refused(capsys, work, tiny_dir, text_file):
    """transformers builds an empty tokenizer there: every window would be EOS (issue 15, item 6)."""
    model = work / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dir / name, model / name)
    err = refused(capsys, work, "measure", model, "--text-file", text_file, *SMALL)
    assert "to 0 tokens (fewer than 1 per 50)" in err and "tokenizer files" in err


# -- windows longer than the model's positions ---------------------------------------------------------------
@pytest.fixture(scope="module")
def families(tmp_path_factory, tokenizer):
    """A tiny saved model of each family (256 positions)."""
    root = tmp_path_factory.mktemp("families")
    return {mt: save_tiny(root / mt, mt, 0, tokenizer) for mt in ("gpt2", "bert", "gpt_neox", "llama")}


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_windows_beyond_absolute_positions_are_refused_even_with_allow_long(capsys, work, families, text_file, family):
    argv = ["measure", families[family], "--text-file", text_file, "--tokens", 1024, "--seq-len", 512]
    for extra in ([], ["--allow-long"]):
        err = refused(capsys, work, *argv, *extra)
        assert "512 is longer than the 256 positions" in err and "use seq-len ≤ 256" in err


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_windows_beyond_rotary_positions_need_allow_long(capsys, work, families, text_file, family):
    argv = ["measure", families[family], "--text-file", text_file, "--tokens", 1024, "--seq-len", 512, "--json"]
    err = refused(capsys, work, *argv)
    assert "never trained" in err and "--allow-long" in err
    assert main([str(a) for a in argv] + ["--allow-long"]) == 0
    blocks = json.loads(capsys.readouterr().out)["blocks"]
    assert [b["status"] for b in blocks] == ["ok", "ok"] and blocks[0]["n_train"] + blocks[0]["n_test"] == 1024


def test_the_random_init_arm_refuses_windows_beyond_absolute_positions(capsys, work, tiny_dir, text_file):
    (work / "ri.toml").write_text(f"""
[experiment]
arms = ["random-init"]
[model]
tokenizer = "{tiny_dir}"
[model.config]
model_type = "gpt2"
vocab_size = 320
n_embd = 32
n_layer = 2
n_head = 4
n_positions = 64
[data]
text_file = "{text_file}"
tokens = 1024
seq_len = 128
[random_init]
seeds = 1
""")
    err = refused(capsys, work, "sweep", work / "ri.toml", "--no-progress")
    assert "128 is longer than the 64 positions a gpt2 model has" in err


# -- evaluation data -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--dataset", "org/data:train.parquet"], "is not in the local cache and the Hub cannot be reached"),
        (["--preset", "paper"], "Salesforce/wikitext:wikitext-2-raw-v1/train-00000-of-00001.parquet is not in the"),
        (["--dataset", "org/data:../../etc/passwd"], "'../../etc/passwd' is not a plain name"),
        (["--dataset", "org/../x:train.parquet"], "is not a Hub repo id"),
    ],
    ids=["dataset-not-cached", "preset-paper-not-cached", "dataset-path-dotdot", "dataset-repo-dotdot"],
)
def test_datasets_offline_or_with_dotdot_are_one_line(capsys, work, tiny_dir, monkeypatch, argv, needle):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(work / "hf"))  # an empty cache, inside the watched folder
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(work / "hf" / "hub"))
    assert needle in refused(capsys, work, "measure", tiny_dir, *argv)


@pytest.mark.parametrize("values", [[1, 2, 3], [0.5, 1.5], [True, False]], ids=["int", "float", "bool"])
def test_a_parquet_column_that_is_not_text_is_one_line(capsys, work, tiny_dir, values):
    pl.DataFrame({"text": values}).write_parquet(work / "col.parquet")
    err = refused(capsys, work, "measure", tiny_dir, "--parquet", work / "col.parquet", *SMALL)
    assert "column 'text'" in err and "not text" in err


@pytest.mark.parametrize("flag", ["--tokens", "--seq-len"])
@pytest.mark.parametrize("command", ["measure", "sweep"])
def test_zero_tokens_or_zero_seq_len_is_an_error_not_the_default(
    capsys, work, ckpts, tiny_dir, text_file, flag, command
):
    target = ["--repo", ckpts, "--revisions", "step0"] if command == "sweep" else [tiny_dir]
    err = refused(capsys, work, command, *target, "--text-file", text_file, flag, 0)
    assert ("tokens=0" if flag == "--tokens" else "seq-len=0") in err


# -- devices and sweep options -------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["measure", "sweep"])
def test_device_cuda_without_cuda_is_refused_before_anything_loads(capsys, work, ckpts, tiny_dir, text_file,
                                                                   monkeypatch, command):  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("trajectory.sources.loading.load_config", lambda *a, **k: pytest.fail("loaded a config"))
    target = ["--repo", ckpts, "--revisions", "step0"] if command == "sweep" else [tiny_dir]
    err = refused(capsys, work, command, *target, "--text-file", text_file, *SMALL, "--device", "cuda")
    assert "no CUDA device" in err


@pytest.mark.parametrize("flag, value", [("--prefetch", -1), ("--workers", 0)])
def test_prefetch_or_workers_out_of_range_is_one_line(capsys, work, ckpts, text_file, flag, value):
    err = refused(capsys, work, "sweep", "--repo", ckpts, "--revisions", "step0",
                  "--text-file", text_file, *SMALL, flag, value)  # fmt: skip
    assert f"{flag} must be an integer" in err


DEMO = Path(__file__).resolve().parent.parent / "manifests" / "demo.toml"


@pytest.fixture
def no_sweep(monkeypatch):
    """A sweep that would start is a failure here (the demo's twin would train for minutes)."""
    monkeypatch.setattr("trajectory.api.checked_sweep", lambda *a, **k: pytest.fail("the sweep started"))


@pytest.mark.parametrize(
    "extra, flag",
    [(["--text-file", "x.txt"], "--text-file"), (["--tokens", "4096"], "--tokens"), (["--random-init", "3"],
     "--random-init"), (["--seq-len", "64"], "--seq-len")],
)  # fmt: skip
def test_quick_form_options_beside_a_manifest_are_refused_not_ignored(capsys, work, no_sweep, extra, flag):
    """The manifest names its own evaluation: an option that would be silently ignored is one line instead."""
    err = refused(capsys, work, "sweep", DEMO, *extra, "--no-progress")
    assert err.startswith(f"trajectory: {flag} is for the quick form"), err


def test_a_manifest_sweep_writes_into_the_store_that_store_names(capsys, work, monkeypatch):
    """``--store DIR`` with a manifest is that sweep's store, as for results, plot and report (it was ignored)."""
    seen = {}
    monkeypatch.setattr("trajectory.api.checked_sweep", lambda m, o: seen.setdefault("store", m.store_dir) and None)
    with pytest.raises(AttributeError):  # the stand-in returns no report
        main(["sweep", str(DEMO), "--store", str(work / "elsewhere"), "--no-progress"])
    assert seen["store"] == work / "elsewhere"


def test_arms_that_name_no_arm_are_one_line_not_every_arm(capsys, work, no_sweep):
    """``--arms ,`` named no arm; read as "every arm, as named", it ran the twin past its CPU cost guard."""
    err = refused(capsys, work, "sweep", DEMO, "--arms", ",", "--no-progress")
    assert "--arms names no arm" in err


# -- manifests -------------------------------------------------------------------------------------------------
OUT_OF_RANGE = {
    "twin seq_len 0": ("[twin]\nseq_len = 0\n", "[twin] seq_len must be an integer ≥ 2, got 0"),
    "twin beta1 2": ("[twin]\nbeta1 = 2\n", "[twin] beta1 must be a finite number in [0.0, 1.0), got 2.0"),
    "twin lr nan": ("[twin]\nlr = nan\n", "[twin] lr must be a finite number in (0.0, 10.0], got nan"),
    "twin eps < 0": ("[twin]\neps = -1e-8\n", "[twin] eps must be a finite number in (0.0, inf], got -1e-08"),
    "twin eps 0": ("[twin]\neps = 0.0\n", "[twin] eps must be a finite number in (0.0, inf], got 0.0"),
    "twin seed 2^63": ("[twin]\nseed = 9223372036854775808\n", "[twin] 'seed' must be a list of distinct integers"),
    "twin seeds 2^63": ("[twin]\nseeds = [9223372036854775808]\n", "[twin] 'seeds' must be a list of distinct"),
    "random-init seed 2^64": ("[random_init]\nseeds = [18446744073709551616]\n", "[random_init] 'seeds' must be"),
    "metric seed 2^63": ("[metric]\nseed = 9223372036854775808\n", "[metric] metric seed must be an integer in"),
    "rcond 0": ("[metric]\nrcond = 0.0\n", "[metric] rcond must be a finite number in (0.0, 1.0], got 0.0"),
    "rcond < 0": ("[metric]\nrcond = -1e-6\n", "[metric] rcond must be a finite number in (0.0, 1.0], got -1e-06"),
    "rcond nan": ("[metric]\nrcond = nan\n", "[metric] rcond must be a finite number in (0.0, 1.0], got nan"),
    "num_hidden_layers -1": (
        "[model.config]\nmodel_type = 'gpt_neox'\nnum_hidden_layers = -1\n",
        "[model.config] 'num_hidden_layers' must be a positive integer",
    ),
    "experiment name with NUL": ('[experiment]\nname = "a\\u0000b"\n', "[experiment] 'name' must be a plain name"),
    "store with NUL": ('[sweep]\nstore = "st\\u0000re"\n', "[sweep] 'store' must be a folder path"),
    "reference nan": ("[reference]\nprofile = [0.5, nan]\n", "[reference] 'profile' must be a list of finite"),
}


@pytest.mark.parametrize("case", OUT_OF_RANGE, ids=list(OUT_OF_RANGE))
def test_out_of_range_manifest_values_are_one_line_naming_file_and_field(capsys, work, case):
    text, needle = OUT_OF_RANGE[case]
    (work / "exp.toml").write_text('[model]\nrepo = "EleutherAI/pythia-14m"\n' + text)
    err = refused(capsys, work, "sweep", work / "exp.toml", "--no-progress")
    assert err.startswith("trajectory: manifest exp.toml: ") and needle in err


# -- stores and outputs ------------------------------------------------------------------------------------------
def _unwritable(work: Path) -> Path:
    """A folder this process cannot write in: a read-only folder, or (as root, who may write anywhere) /sys."""
    if os.geteuid() != 0:
        folder = work / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if not Path("/sys/kernel").is_dir() or os.access("/sys", os.W_OK) and _mkdir_works(Path("/sys")):
        pytest.skip("running as root without a read-only filesystem to try")
    return Path("/sys")


def _mkdir_works(folder: Path) -> bool:
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(dir=folder))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("kind", ["file", "unwritable", "nul"])
def test_a_store_that_cannot_be_a_writable_folder_is_one_line(capsys, work, ckpts, text_file, kind):
    if kind == "file":
        (work / "store-file").write_text("mine")
        store, needle = work / "store-file", "is a file, not a folder"
    elif kind == "unwritable":
        store, needle = _unwritable(work) / "store", "is not writable"
    else:
        store, needle = f"{work}/st\0re", "holds NUL or control characters"
    err = refused(capsys, work, "sweep", "--repo", ckpts, "--revisions", "step0",
                  "--text-file", text_file, *SMALL, "--store", store, "--no-progress")  # fmt: skip
    assert needle in err


@pytest.fixture
def synthetic(work):
    from synthetic import build_store, write_manifest

    build_store(work / "store", steps=[0, 1, 64], blocks=2)
    return write_manifest(work / "synth.toml", work / "store", blocks=2)


@pytest.mark.parametrize("flag", ["--csv", "--parquet"])
def test_results_export_into_a_folder_is_one_line(capsys, work, synthetic, flag):
    (work / "out").mkdir()
    assert "is a folder; give a file name" in refused(capsys, work, "results", synthetic, flag, work / "out")


def test_results_export_is_written_whole(capsys, work, synthetic):
    assert main(["results", str(synthetic), "--csv", str(work / "rows.csv")]) == 0
    assert pl.read_csv(work / "rows.csv").height == int(capsys.readouterr().err.split()[0])
    assert not list(work.glob(".tmp-*"))


@pytest.mark.parametrize("command", ["report", "plot"])
def test_figures_out_onto_a_file_is_one_line(capsys, work, synthetic, command):
    (work / "taken").write_text("mine")
    err = refused(capsys, work, command, synthetic, "--out", work / "taken")
    assert "--out" in err and "is a file, not a folder" in err
    assert (work / "taken").read_text() == "mine"


def test_results_of_a_store_that_does_not_exist_is_an_error(capsys, work):
    (work / "exp.toml").write_text(f'[model]\nrepo = "EleutherAI/pythia-14m"\n[sweep]\nstore = "{work}/nowhere"\n')
    assert "store folder not found" in refused(capsys, work, "results", work / "exp.toml")


def test_store_warnings_are_trajectory_lines_not_python_warnings(capsys, work, synthetic):
    (work / "store" / "units" / "0123456789abcdef01234567.parquet").write_bytes(b"not parquet")
    assert main(["results", str(synthetic), "--csv", str(work / "rows.csv")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("trajectory: store ") and "skipped 0123456789abcdef01234567.parquet" in err[0]
    assert not any("Warning" in line for line in err) and err[-1].endswith(f"written to {work / 'rows.csv'}")
