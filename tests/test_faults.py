"""Hostile names, missing revisions, non-finite activations and concurrent sweeps (issue 7)."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from builders import key_of, local_manifest, tiny_model
from hubserver import REPO, build_checkpoints

from trajectory.cli import main
from trajectory.config import DataSpec, MetricConfig
from trajectory.data.tokens import eval_tokens
from trajectory.engine.measure import measure_blocks
from trajectory.errors import TrajectoryError
from trajectory.manifest import load_manifest, quick_manifest
from trajectory.scheduler import prune_failures
from trajectory.sources.hub import HubSource, RetryPolicy
from trajectory.sources.local import LocalDirSource
from trajectory.store import Store
from trajectory.verify import verify_store

FAST = RetryPolicy(attempts=2, wait=0.01)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tokenizer):
    return build_checkpoints(tmp_path_factory.mktemp("faults") / "ck", [0, 4], tokenizer, same_as_step0=())


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, out, err):
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def outside(tmp_path: Path, name: str) -> list[Path]:
    """Files called ``name`` anywhere under pytest's base folder (where an escape from the cache would land)."""
    return list(tmp_path.parents[1].rglob(name))


# -- names that would leave their folder --------------------------------------------------------------------
def test_a_hub_branch_named_like_a_path_is_refused_before_anything_is_written(hub, ckpts, tmp_path, capsys, text_file):
    hub.state.add_revision(REPO, "../../../escaped0", hub.state.repos[REPO]["step0"].files)
    with pytest.raises(TrajectoryError, match=r"revision of EleutherAI/pythia-tiny '\.\./\.\./\.\./escaped0' is not"):
        HubSource(REPO, retry=FAST).pin(["step0", "../../../escaped0"])
    err = one_line(
        *run(
            capsys,
            "sweep",
            "--repo",
            REPO,
            "--revisions",
            "../../../escaped0",
            "--text-file",
            text_file,
            "--store",
            tmp_path / "s",
            "--no-progress",
        )
    )
    assert "is not a plain name" in err
    assert outside(tmp_path, "escaped0") == [] and not (tmp_path / "s").exists()


def test_a_commit_id_that_is_not_hex_is_refused(hub):
    hub.state.repos[REPO]["step4"].commit = "../../../../tmp/evil"
    with pytest.raises(TrajectoryError, match="is not|as a commit id; a commit id is 40 hex digits"):
        HubSource(REPO, retry=FAST).pin(["step0"])


def test_a_served_weight_index_naming_a_path_outside_the_snapshot_is_refused(hub, ckpts, tmp_path):
    files = dict(hub.state.repos[REPO]["step0"].files)
    files["model.safetensors.index.json"] = json.dumps({"weight_map": {"w": "../../../../evil.safetensors"}}).encode()
    files["../../../../evil.safetensors"] = b"x" * 64
    del files["model.safetensors"]
    rev = hub.state.add_revision(REPO, "step9", files)
    src = HubSource(REPO, retry=FAST)
    src.pin(["step9"])
    with pytest.raises(TrajectoryError, match=r"model.safetensors.index.json entry '\.\./\.\./\.\./\.\./evil"):
        src.fetch("step9", rev.commit)
    assert outside(tmp_path, "evil.safetensors") == []
    assert not [r for r in hub.state.requests if r.filename and "evil" in r.filename]  # never even asked for


@pytest.mark.parametrize("repo", ["EleutherAI/../../x", "../x", "a/b/c", "EleutherAI/pythia--x"])
def test_a_repo_id_with_dots_or_extra_slashes_is_refused(repo, capsys, text_file):
    with pytest.raises(TrajectoryError, match="is not a Hub repo id"):
        HubSource(repo)
    err = one_line(*run(capsys, "measure", repo, "--text-file", text_file))
    assert "is not a Hub repo id" in err


def test_measure_with_a_path_like_hub_revision_is_one_line(hub, capsys, text_file, tmp_path):
    err = one_line(*run(capsys, "measure", REPO, "--revision", "../../../../escaped1", "--text-file", text_file))
    assert "is not a plain name" in err and outside(tmp_path, "escaped1") == []


def test_a_local_revision_cannot_leave_the_checkpoint_folder(ckpts):
    with pytest.raises(TrajectoryError, match="is not a plain name"):
        LocalDirSource(ckpts).pin(["step0", "../ck/step4"])


def test_a_quick_sweep_of_a_repo_without_a_plain_name_is_refused(text_file):
    data = DataSpec("text", str(text_file))
    with pytest.raises(TrajectoryError, match="does not end in a plain name"):
        quick_manifest("ORG/..", ["step0"], data, MetricConfig(), None)


def test_a_failure_record_cannot_make_the_sweep_delete_a_file_outside_failed(tmp_path):
    store = Store(tmp_path / "store")
    prov = dict(
        experiment="e",
        arm="hub",
        model="m",
        seed=None,
        revision="step0",
        step=0,
        commit="c" * 40,
        data_hash="d",
        metric_config="k",
    )
    key = key_of(prov)
    store.write_unit(key, [{**prov, "block": 0, "r2_lin": 0.5, "status": "ok"}])
    victim = tmp_path / "victim.json"
    victim.write_text("{}")
    (store.failed / "evil.json").write_text(
        json.dumps({"key": "../../victim", "experiment": "e", "arm": "hub", "revision": "step0"})
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from trajectory.arms import Unit
        from trajectory.config import Provenance

        prune_failures(store, [Unit(Provenance(**prov))])
    assert victim.exists() and "evil.json" in " ".join(str(w.message) for w in caught)
    with pytest.raises(TrajectoryError, match="is not a hex digest"):
        store.has("../../victim")


# -- a revision that does not exist ---------------------------------------------------------------------------
def test_measure_of_a_hub_revision_that_does_not_exist_is_one_line(hub, capsys, text_file):
    err = one_line(*run(capsys, "measure", REPO, "--revision", "step999", "--text-file", text_file))
    assert f"revision 'step999' does not exist in {REPO}" in err


# -- non-finite activations -----------------------------------------------------------------------------------
def test_fp16_overflow_flags_the_block_instead_of_a_number(tokenizer, text_file):
    model = tiny_model("gpt_neox").half()
    with torch.no_grad():
        model.gpt_neox.layers[1].mlp.dense_4h_to_h.weight.fill_(6e4)  # fp16 max is 65504: the sums overflow
    tokens = eval_tokens(DataSpec("text", str(text_file), tokens=1024, seq_len=64), tokenizer)
    got = measure_blocks(model.gpt_neox, tokens, MetricConfig())
    assert got[0]["status"] == "ok" and np.isfinite(got[0]["r2_lin"])
    assert got[1]["status"] == "nonfinite activations" and np.isnan(got[1]["r2_lin"])


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory, tokenizer):
    """Checkpoints step0 (fine) and step4 (block 1's FFN output overflows float32)."""
    root = build_checkpoints(tmp_path_factory.mktemp("nonfinite") / "ck", [0], tokenizer)
    model = tiny_model("gpt_neox", seed=4)
    with torch.no_grad():
        model.gpt_neox.layers[1].mlp.dense_4h_to_h.weight.fill_(3e38)
    model.save_pretrained(root / "step4")
    tokenizer.save_pretrained(root / "step4")
    return root


def test_measure_prints_the_flagged_block_and_exits_non_zero(overflowing, capsys, text_file):
    args = ["measure", overflowing, "--revision", "step4", "--text-file", text_file, "--tokens", 1024, "--seq-len", 64]
    code, out, err = run(capsys, *args, "--json")
    blocks = json.loads(out)["blocks"]  # strict JSON: NaN would not parse with parse_constant refusing it
    json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert code == 1 and err.strip() == "trajectory: blocks [1] have no R²_lin: nonfinite activations"
    assert blocks[0]["status"] == "ok" and blocks[0]["r2_lin"] is not None
    assert blocks[1]["status"] == "nonfinite activations" and blocks[1]["r2_lin"] is None
    code, out, err = run(capsys, *args)
    assert (
        code == 1 and out.splitlines()[-1].split()[0] == "1" and out.splitlines()[-1].endswith("nonfinite activations")
    )


def test_a_sweep_stores_the_flagged_rows_with_their_reason_and_goes_on(overflowing, text_file, tmp_path, capsys):
    code, out, err = run(
        capsys,
        "sweep",
        "--repo",
        overflowing,
        "--revisions",
        "step0,step4",
        "--text-file",
        text_file,
        "--tokens",
        1024,
        "--seq-len",
        64,
        "--store",
        tmp_path / "s",
        "--no-progress",
    )
    assert code == 0 and "2 measured, 0 cached, 0 failed" in out, err
    assert "flagged: local:step4 (non-finite activations in blocks [1])" in out
    rows = Store(tmp_path / "s").read().sort("revision", "block")
    assert rows["status"].to_list() == ["ok", "ok", "ok", "nonfinite activations"]
    bad = rows.row(3, named=True)
    assert bad["r2_lin"] is None or np.isnan(bad["r2_lin"])
    assert rows.filter(pl.col("status") == "ok")["r2_lin"].is_finite().all()


# -- two sweeps into one store at once ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def many(tmp_path_factory, tokenizer):
    return build_checkpoints(tmp_path_factory.mktemp("concurrent") / "ck", [0, 1, 2, 4], tokenizer, same_as_step0=())


@pytest.mark.slow  # two fresh interpreters importing torch: ~30 s on 2 cores
def test_two_sweeps_at_once_into_one_store_neither_corrupt_nor_duplicate(many, text_file, tmp_path):
    toml = local_manifest(tmp_path / "both.toml", many, text_file, [0, 1, 2, 4], tmp_path / "store", tokens=1024)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "trajectory", "sweep", str(toml), "--no-progress"]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e.decode()[-1500:] for _, e in outs]
    done = [int(o.decode().split(" measured")[0].split()[-1]) for o, _ in outs]
    assert sum(done) >= 4  # between them every unit was measured (some perhaps by both)
    store = Store(tmp_path / "store")
    assert len(list(store.units.glob("*.parquet"))) == 4 and not list(store.units.glob(".tmp-*"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any unreadable file would warn
        rows = store.read()
    assert rows.height == 8 and rows.select("revision", "block").n_unique() == 8
    assert verify_store(store.root, load_manifest(toml)).ok


def test_evaluation_text_shorter_than_asked_is_one_line(capsys, tmp_path, ckpts):
    short = tmp_path / "short.txt"
    short.write_text("def f(x):\n    return x + 1\n")
    err = one_line(*run(capsys, "measure", ckpts, "--revision", "step0", "--text-file", short, "--tokens", 4096))
    assert "fewer than the 4096 asked for; lower --tokens or give more text" in err


def test_every_test_the_docs_cite_exists():
    """Each `test_x.py::name` cited in README.md or docs/**/*.md names a test that exists, and the reliability
    table (docs/reliability.md) cites at least 30: a renamed or deleted test cannot leave a promise unchecked."""
    import re

    root = Path(__file__).resolve().parent.parent
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    cite = re.compile(r"`(test_\w+\.py)::(test_\w+)`")
    table = (root / "docs" / "reliability.md").read_text(encoding="utf-8").split("| When … |", 1)[1]
    assert len(cite.findall(table)) >= 30
    for page in pages:
        for file, name in cite.findall(page.read_text(encoding="utf-8")):
            source = (Path(__file__).parent / file).read_text(encoding="utf-8")
            where = page.relative_to(root)
            assert re.search(rf"^def {name}\(", source, re.M), f"{where} cites {file}::{name}, which does not exist"


# -- a damaged unit is never counted as done ---------------------------------------------------------------------
def test_truncated_garbage_and_copied_units_are_moved_aside_and_measured_again(many, text_file, tmp_path, capsys):
    toml = local_manifest(tmp_path / "dmg.toml", many, text_file, [0, 1, 2, 4], tmp_path / "store", tokens=1024)
    code, out, err = run(capsys, "sweep", toml, "--no-progress")
    assert code == 0 and "4 measured" in out, err
    store = Store(tmp_path / "store")
    by_rev = {r["revision"]: r["key"] for r in store.read().unique("revision").iter_rows(named=True)}
    unit = {rev: store.unit_path(key) for rev, key in by_rev.items()}
    good = {rev: path.read_bytes() for rev, path in unit.items()}
    damaged = {
        "step0": good["step0"][: len(good["step0"]) // 2],  # truncated
        "step1": os.urandom(len(good["step1"])),  # garbage
        "step2": good["step4"],  # step4's unit copied under step2's key
    }
    for rev, data in damaged.items():
        unit[rev].write_bytes(data)
    stray = store.units / f"{'0' * 24}.parquet"
    stray.write_bytes(good["step4"])  # and under a key no unit has
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run(capsys, "sweep", toml, "--no-progress")
        assert code == 0 and "3 measured, 1 cached, 0 failed" in out, out + err
        assert f"3 damaged unit file(s) moved to {tmp_path / 'store' / 'quarantine'}" in out
        moved = [p.read_bytes() for p in (store.root / "quarantine").iterdir()]
        assert sorted(moved) == sorted(damaged.values())  # every damaged file kept, byte for byte
        assert unit["step4"].read_bytes() == good["step4"]
        rows = Store(tmp_path / "store").read()
        assert rows.height == 8 and rows.select("revision", "block").n_unique() == 8
        code, out, err = run(capsys, "results", toml)
        assert code == 0 and all(out.count(f"step{s} ") == 2 for s in (0, 1, 2, 4)), out  # one row per block
        code, out, _ = run(capsys, "sweep", toml, "--no-progress")
        assert "0 measured, 4 cached, 0 failed" in out and "moved" not in out
    assert f"skipped {stray.name}" in " ".join(str(w.message) for w in caught)  # the stray copy: reported


# -- symlinked checkpoint folders: measure and the sweep follow one rule -------------------------------------------
def test_a_symlinked_revision_is_measured_wherever_it_leads_and_a_name_leaving_the_folder_is_refused_alike(
    ckpts, text_file, tmp_path, capsys
):
    """A folder of links into scratch storage is a common layout: reading through the user's own link is safe
    (nothing is written there), so a link leading out of the folder is measured like one inside it.  A revision
    *name* that leaves the folder (``../x``) is still refused, by ``measure`` and the sweep alike."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(ckpts / "step0", run_dir / "saved" / "step0")
    shutil.copytree(ckpts / "step4", tmp_path / "elsewhere" / "step4")
    (run_dir / "step0").symlink_to(run_dir / "saved" / "step0")  # stays inside the checkpoint folder
    (run_dir / "step4").symlink_to(tmp_path / "elsewhere" / "step4")  # leads out of it
    args = ["--text-file", text_file, "--tokens", 1024, "--seq-len", 64]
    for rev in ("step0", "step4"):
        code, out, err = run(capsys, "measure", run_dir, "--revision", rev, *args, "--json")
        assert code == 0, err
        _, direct, _ = run(capsys, "measure", ckpts, "--revision", rev, *args, "--json")
        assert json.loads(out)["blocks"] == json.loads(direct)["blocks"]
    code, out, err = run(
        capsys, "sweep", "--repo", run_dir, "--revisions", "step0,step4", *args, "--store", tmp_path / "a"
    )
    assert code == 0 and "2 measured" in out, err
    (run_dir / "step8").symlink_to(tmp_path / "elsewhere" / "step4")
    refused = one_line(*run(capsys, "measure", run_dir / "saved", "--revision", "../step8", *args))
    assert "'../step8' is not a plain name" in refused
    swept = one_line(
        *run(
            capsys,
            "sweep",
            "--repo",
            run_dir / "saved",
            "--revisions",
            "step0,../step8",
            *args,
            "--store",
            tmp_path / "b",
        )
    )
    assert "'../step8' is not a plain name" in swept and not (tmp_path / "b").exists()
