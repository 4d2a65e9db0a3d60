"""`trajectory verify`: every stored unit checked against its provenance — stale, duplicated, missing, unreadable."""

import shutil
import warnings

import polars as pl
import pytest
from builders import key_of, local_manifest
from hubserver import build_checkpoints

from trajectory.cli import main
from trajectory.manifest import load_manifest
from trajectory.scheduler import SweepOptions, run_sweep
from trajectory.store import Store
from trajectory.verify import verify_store

STEPS = [0, 4, 8]


def write_manifest(folder, ckpts, text_file, steps=STEPS, metric="", tokens=2048):
    return local_manifest(folder / "exp.toml", ckpts, text_file, steps, folder / "store", tokens=tokens, extra=metric)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tokenizer, text_file):
    """A local-arm experiment swept once: (folder with checkpoints and store, manifest path)."""
    folder = tmp_path_factory.mktemp("verify")
    ckpts = build_checkpoints(folder / "ck", STEPS, tokenizer, same_as_step0=())
    toml = write_manifest(folder, ckpts, text_file)
    report = run_sweep(load_manifest(toml), SweepOptions(progress=False))
    assert report.count("done") == len(STEPS) and not report.failed
    return folder, toml


@pytest.fixture
def copy(swept, tmp_path, text_file):
    """A private copy of the swept experiment, its manifest rewritten to point at the copy."""
    folder, _ = swept
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    return tmp_path, write_manifest(tmp_path, tmp_path / "ck", text_file)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def findings(result, kind):
    return [f for f in result.findings if f.kind == kind]


def test_a_freshly_swept_store_verifies_clean(swept, capsys):
    code, out, err = run(capsys, "verify", swept[1])
    assert code == 0, out
    assert out[0].endswith(
        "3 units, 6 rows: 0 unreadable, 0 inconsistent, 0 duplicated, 0 mislabelled, 0 stale, 0 missing — ok"
    )


def test_a_changed_metric_config_makes_every_unit_stale_and_missing(copy, text_file, capsys):
    folder, _ = copy
    toml = write_manifest(folder, folder / "ck", text_file, metric="[metric]\nheldout_frac = 0.3")
    code, out, _ = run(capsys, "verify", toml)
    assert code == 1 and "0 duplicated, 0 mislabelled, 3 stale, 3 missing" in out[0]
    stale = [ln for ln in out if ln.strip().startswith("stale")]
    assert len(stale) == 3 and all("metric config" in ln and "the manifest gives" in ln for ln in stale)


def test_other_evaluation_text_makes_units_stale_by_data_hash(copy, text_file):
    folder, _ = copy
    toml = write_manifest(folder, folder / "ck", text_file, tokens=1024)
    result = verify_store(folder / "store", load_manifest(toml))
    assert len(findings(result, "stale")) == 3 and all("data hash" in f.detail for f in findings(result, "stale"))


def test_a_changed_checkpoint_makes_its_unit_stale_by_commit(copy):
    folder, toml = copy
    (folder / "ck" / "step4" / "extra.txt").write_text("changed")  # the folder's content hash moves
    result = verify_store(folder / "store", load_manifest(toml))
    stale, missing = findings(result, "stale"), findings(result, "missing")
    assert [f.where.split(" (")[0] for f in stale] == ["exp local step4"] and "commit" in stale[0].detail
    assert [f.where for f in missing] == ["exp local step4"] and not result.ok


def test_a_scheduled_revision_without_a_unit_is_missing_with_its_recorded_failure(copy, text_file, capsys):
    folder, _ = copy
    toml = write_manifest(folder, folder / "ck", text_file, steps=STEPS + [16])
    run_sweep(load_manifest(toml), SweepOptions(progress=False))  # records step16 as not found
    code, out, _ = run(capsys, "verify", toml)
    assert code == 1 and "0 stale, 1 missing" in out[0]
    assert any("missing" in ln and "step16" in ln and "recorded failure: revision not found" in ln for ln in out)


def test_two_units_for_one_revision_and_evaluation_are_duplicated(copy):
    folder, toml = copy
    store = Store(folder / "store")
    row = store.read().filter(pl.col("revision") == "step8").row(0, named=True)
    moved = {
        k: row[k] for k in ("experiment", "arm", "model", "seed", "revision", "step", "data_hash", "metric_config")
    } | {"commit": "f" * 40}  # as if the branch had moved
    store.write_unit(key_of(moved), [{**moved, "block": b, "r2_lin": 0.5, "status": "ok"} for b in (0, 1)])
    result = verify_store(folder / "store", load_manifest(toml))
    dup = findings(result, "duplicated")
    assert len(dup) == 1 and dup[0].where == "exp local step8" and "ffffffffffff" in dup[0].detail
    assert len(findings(result, "stale")) == 1  # the moved one no longer matches the folder's content hash


def test_truncated_foreign_renamed_and_junk_files_are_named(copy, capsys):
    folder, _ = copy
    units = folder / "store" / "units"
    good = sorted(units.glob("*.parquet"))
    (units / "0123456789abcdef01234567.parquet").write_bytes(good[0].read_bytes()[:80])
    pl.DataFrame({"x": [1]}).write_parquet(units / "foreign.parquet")
    shutil.copy(good[1], units / "abcdefabcdefabcdefabcdef.parquet")
    (folder / "store" / "failed").mkdir(exist_ok=True)
    (folder / "store" / "failed" / "junk.json").write_text("{nope")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # verify reports; it does not warn
        code, out, err = run(capsys, "verify", "--store", folder / "store")
    assert code == 1 and "3 unreadable, 1 inconsistent" in out[0] and "Traceback" not in err
    text = "\n".join(out)
    assert "0123456789abcdef01234567.parquet" in text and "foreign.parquet" in text and "junk.json" in text
    assert "abcdefabcdefabcdefabcdef.parquet: its rows name key(s)" in text
    assert "no manifest" in text


def test_an_edited_provenance_is_caught_by_the_recomputed_key(copy):
    folder, toml = copy
    path = sorted((folder / "store" / "units").glob("*.parquet"))[0]
    frame = pl.read_parquet(path).with_columns(pl.lit("d" * 16).alias("data_hash"))
    frame.write_parquet(path)
    result = verify_store(folder / "store", load_manifest(toml))
    bad = findings(result, "inconsistent")
    assert len(bad) == 1 and "not the hash of its rows' provenance" in bad[0].detail


def test_without_a_manifest_or_a_store_it_says_what_to_give(capsys, tmp_path):
    code, out, err = run(capsys, "verify")
    assert code == 2 and out == [] and err.strip() == "trajectory: give a MANIFEST or --store DIR to verify"
    code, out, err = run(capsys, "verify", "--store", tmp_path / "nothing")
    assert code == 2 and "store folder not found" in err and len(err.strip().splitlines()) == 1
