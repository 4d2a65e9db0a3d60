"""A store without a manifest: the quick-form sweep (with ``--random-init N``), then results, plot, report
and verify with ``--store DIR`` alone, and the context the stored rows give."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import polars as pl
import pytest
from builders import key_of
from hubserver import build_checkpoints
from synthetic import DATA_HASH, FAILED_STEP, MISSING_STEP, MODEL, SHORT_STEPS, build_store

from trajectory.cli import main
from trajectory.errors import TrajectoryError
from trajectory.plots import context_from
from trajectory.store import Store
from trajectory.stored import stored_experiment

pytestmark = pytest.mark.usefixtures("one_thread")

ON_DISK = [0, 2, 10]
GAPS = [20, 100, 300]  # scheduled, never on disk: string order would put step100 first
SEEDS = 3


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tokenizer, text_file):
    """``sweep --repo CKPTS --revisions … --random-init 3 --store S``: the quick form, no manifest anywhere."""
    root = tmp_path_factory.mktemp("quick")
    ckpts = build_checkpoints(root / "ck", ON_DISK, tokenizer, same_as_step0=())
    revisions = ",".join(f"step{s}" for s in ON_DISK + GAPS)
    out, err = io.StringIO(), io.StringIO()  # a module fixture cannot take capsys: capture by hand
    with redirect_stdout(out), redirect_stderr(err):
        code = main(
            ["sweep", "--repo", str(ckpts), "--revisions", revisions, "--random-init", str(SEEDS), "--text-file",
             str(text_file), "--tokens", "2048", "--seq-len", "64", "--store", str(root / "S"), "--no-progress"]
        )  # fmt: skip
    return root, ckpts, code, out.getvalue(), err.getvalue()


def test_quick_sweep_with_random_init_measures_every_seed_on_the_same_windows(swept):
    root, ckpts, code, out, err = swept
    assert code == 1 and "Traceback" not in err  # the three gaps are failures; everything else is measured
    summary = out.strip().splitlines()[-1]
    assert f"{len(ON_DISK) + SEEDS} measured, 0 cached, {len(GAPS)} failed" in summary
    assert summary.endswith(f"rows in {root / 'S'}")
    assert "missing: " + ", ".join(f"step{s}" for s in GAPS) in summary  # natural order
    rows = Store(root / "S").read()
    init = rows.filter(pl.col("arm") == "random-init")
    assert sorted(set(init["seed"])) == list(range(SEEDS)) and init.height == SEEDS * 2
    assert init["weights_hash"].n_unique() == SEEDS  # distinct draws
    assert rows["data_hash"].n_unique() == 1 and rows["n_train"].n_unique() == 1  # one evaluation for both arms


def test_a_local_revision_is_never_said_to_be_missing_on_the_hub(swept, capsys):
    root, ckpts, code, out, err = swept
    assert f"revision not found in {ckpts.resolve()}" in out and "hub" not in (out + err).lower()
    code, vout, verr = cli(capsys, "verify", "--store", root / "S")
    assert code == 0 and "hub" not in (vout + verr).lower()
    assert cli(capsys, "report", "--store", root / "S", "--out", root / "figs")[0] == 0
    assert "hub" not in (root / "figs" / "report.md").read_text().lower()


def test_results_of_a_store_alone_as_csv_on_stdout_and_as_json(swept, capsys):
    root, *_ = swept
    stored = Store(root / "S").read()
    code, out, err = cli(capsys, "results", "--store", root / "S", "--csv", "-")
    assert code == 0 and f"{stored.height} rows written to standard output" in err
    csv = pl.read_csv(io.StringIO(out))
    assert csv.height == stored.height and set(csv.columns) == set(stored.columns)
    code, out, err = cli(capsys, "results", "--store", root / "S", "--json")
    records = json.loads(out)
    assert code == 0 and len(records) == stored.height
    by_key = {(r["key"], r["block"]): r["r2_lin"] for r in stored.iter_rows(named=True)}
    assert {(r["key"], r["block"]): r["r2_lin"] for r in records} == by_key
    assert cli(capsys, "results", "--store", root / "S", "--json", root / "rows.json")[0] == 0
    assert json.loads((root / "rows.json").read_text()) == records
    code, _, err = cli(capsys, "results", "--store", root / "S", "--parquet", "-")
    assert code == 2 and "parquet is binary" in err
    code, _, err = cli(capsys, "results")
    assert code == 2 and "--store DIR" in err


def test_report_from_the_store_alone_has_the_band_and_says_what_it_cannot_know(swept, capsys):
    root, *_ = swept
    out = root / "report"
    code, printed, err = cli(capsys, "report", "--store", root / "S", "--out", out)
    assert code == 0, err
    report = (out / "report.md").read_text()
    rows = Store(root / "S").read()
    final = rows.filter((pl.col("arm") == "local") & (pl.col("step") == max(ON_DISK))).sort("block")["r2_lin"]
    init = rows.filter(pl.col("arm") == "random-init").group_by("block").agg(pl.col("r2_lin").mean()).sort("block")
    for value in [*final, *init["r2_lin"]]:
        assert f"{value:.4f}" in report  # the final values and the band come from the store's rows
    assert f", {SEEDS})" in report  # seeds per band
    assert "without its manifest" in report and "not recorded in the store" in report
    assert f"{len(GAPS)} of {len(ON_DISK) + len(GAPS)} scheduled steps have no usable row: 20, 100, 300." in report
    failed = [report.index(f"revision=step{s},") for s in GAPS]
    assert failed == sorted(failed)  # the failure table in natural order
    assert (out / "lines_by_block.png").stat().st_size > 5_000
    code, printed, _ = cli(capsys, "plot", "--store", root / "S", "--out", root / "plots")
    assert code == 0 and "lines_by_block.png" in printed


def test_results_json_is_strict_json_with_a_flagged_block_as_null(tmp_path, capsys):
    store = build_store(tmp_path / "s", twin=False, steps=[0, 8], seeds=[0, 1], blocks=2)
    prov = dict(experiment="synth", arm="hub", model=MODEL, seed=0, revision="step16", step=16, commit="c",
                data_hash=DATA_HASH, metric_config="k")  # fmt: skip
    store.write_unit(key_of(prov), [dict(prov, block=0, r2_lin=float("nan"), status="nonfinite activations")])
    code, out, _ = cli(capsys, "results", "--store", tmp_path / "s", "--json")
    records = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    flagged = [r for r in records if r["revision"] == "step16"]
    assert code == 0 and flagged == [dict(flagged[0], r2_lin=None, status="nonfinite activations")]


def test_a_manifest_with_store_reads_that_store_instead_of_its_own(tmp_path, capsys):
    from synthetic import write_manifest

    build_store(tmp_path / "elsewhere", twin=False, steps=[0, 8], seeds=[0, 1], blocks=2)
    toml = write_manifest(tmp_path / "synth.toml", tmp_path / "empty", arms=("hub", "random-init"), blocks=2)
    code, out, _ = cli(capsys, "results", toml, "--store", tmp_path / "elsewhere", "--json")
    assert code == 0 and len(json.loads(out)) == Store(tmp_path / "elsewhere").read().height > 0
    code, out, err = cli(capsys, "results", toml, "--json")
    assert code == 2 and out == "" and "store folder not found" in err  # its own [sweep] store does not exist


def test_stored_experiment_is_what_the_rows_and_failure_records_say(tmp_path):
    store = build_store(tmp_path / "s")
    store.record_failure(
        key_of({"experiment": "synth", "arm": "hub", "step": 145_000, "revision": "step145000"}),
        {"experiment": "synth", "arm": "hub", "revision": "step145000", "step": 145_000, "seed": None},
        "HTTP 503",
    )
    exp = stored_experiment(tmp_path / "s")
    stored_hub = [s for s in SHORT_STEPS if s not in (MISSING_STEP, FAILED_STEP)]
    assert exp.name == "synth" and exp.repo == MODEL and exp.arms == ("hub", "random-init", "twin")
    assert exp.steps["hub"] == tuple(sorted(stored_hub + [145_000]))  # stored, plus the step recorded as failed
    assert exp.random_init_seeds == (0, 1, 2, 3, 4) and exp.data is None and exp.metric is None
    frame = store.read()
    ctx = context_from(exp, frame)
    assert ctx.data_hash == DATA_HASH and ctx.expected == exp.steps and ctx.totals == {}
    assert "1250 tokens" in ctx.data_label and "not recorded" in ctx.data_label  # n_train + n_test of the rows


def test_a_store_of_several_experiments_needs_a_name(tmp_path, capsys):
    store = build_store(tmp_path / "s", twin=False, steps=[0, 8], seeds=[0, 1])
    prov = dict(experiment="other", arm="hub", model="m", seed=0, revision="step0", step=0, commit="c",
                data_hash="d", metric_config="k")  # fmt: skip
    store.write_unit(key_of(prov), [dict(prov, block=0, r2_lin=0.5, status="ok")])
    with pytest.raises(TrajectoryError, match=r"holds experiments \['other', 'synth'\]"):
        stored_experiment(tmp_path / "s")
    assert stored_experiment(tmp_path / "s", "other").steps == {"hub": (0,)}
    with pytest.raises(TrajectoryError, match="no rows of experiment 'nope'"):
        stored_experiment(tmp_path / "s", "nope")
    code, _, err = cli(capsys, "report", "--store", tmp_path / "s", "--out", tmp_path / "f")
    assert code == 2 and "--experiment NAME" in err


def test_verify_of_a_store_alone_lists_revisions_in_natural_order(tmp_path, capsys):
    store = Store(tmp_path / "s")
    for step in (100, 2, 10):  # each stored twice under one evaluation: duplicated
        for commit in ("a", "b"):
            prov = dict(experiment="e", arm="hub", model="m", seed=None, revision=f"step{step}", step=step,
                        commit=commit * 40, data_hash="d", metric_config="k")  # fmt: skip
            store.write_unit(key_of(prov), [dict(prov, block=0, r2_lin=0.5, status="ok")])
    code, out, _ = cli(capsys, "verify", "--store", tmp_path / "s")
    lines = [line for line in out.splitlines() if "duplicated" in line and " e hub " in line]
    assert code == 1 and [line.split()[3].rstrip(":") for line in lines] == ["step2", "step10", "step100"], out


@pytest.mark.parametrize("name", ["../../escaped", "a/b", ".hidden"])
def test_a_stored_experiment_name_that_is_no_plain_name_is_refused_before_anything_is_written(
    tmp_path, capsys, monkeypatch, name
):
    """A store from elsewhere names its experiment in its rows; ``report --store S`` writes into
    ``figures/<name>/``, so a name like ``../../x`` would write report.md beside the user's files."""
    store = Store(tmp_path / "S")
    prov = dict(experiment=name, arm="hub", model=MODEL, seed=None, revision="step1", step=1, commit="c" * 40,
                data_hash=DATA_HASH, metric_config="m")  # fmt: skip
    store.write_unit(key_of(prov), [dict(prov, block=0, r2_lin=0.5, status="ok")])
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    code, out, err = cli(capsys, "report", "--store", tmp_path / "S")
    assert code == 2 and err.startswith("trajectory: ") and "not a plain name" in err, err
    assert sorted(p.name for p in tmp_path.rglob("*") if p.suffix in (".md", ".html", ".png")) == []
