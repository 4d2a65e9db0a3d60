"""Several experiments in one report (``trajectory report A.toml B.toml …``): the trained band across runs, each
run's verdict, whether the runs agree, and the one-line refusals of experiments that cannot be compared."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from builders import key_of, local_manifest, save_tiny, tiny_model

import trajectory as tj
from trajectory.cli import main
from trajectory.store import Store

T975 = {2: 4.303, 4: 2.776}  # t(0.975, ν) from a printed table (NIST/SEMATECH 1.3.6.7.2)
OFFSETS = [-0.02, -0.01, 0.0, 0.01, 0.02]  # random-init draws: sd 0.0158 exactly
STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000, 4000]
MODEL = "EleutherAI/pythia-160m"


# -- real runs: three folders of tiny checkpoints, swept as a user would ---------------------------------------
@pytest.fixture(scope="module")
def swept(tmp_path_factory, tokenizer, text_file):
    """Three runs (local folders, steps 0, 10, 20; every checkpoint its own seed) of one tiny GPT-NeoX, and a
    fourth of another shape (3 blocks); the first two manifests also draw the same 3 random-init seeds."""
    root = tmp_path_factory.mktemp("runs")
    manifests = []
    for run in range(4):
        ckpts = root / f"ckpts{run}"
        for step in (0, 10, 20):
            path = ckpts / f"step{step}"
            if run < 3:
                save_tiny(path, "gpt_neox", 100 * run + step, tokenizer)
            else:
                tiny_model("gpt_neox", step, num_hidden_layers=3).save_pretrained(path)
                tokenizer.save_pretrained(path)
        arms = ("local", "random-init") if run < 2 else ("local",)
        m = local_manifest(root / f"run{run}.toml", ckpts, text_file, [0, 10, 20], root / f"store{run}", arms=arms,
                           tokens=1536, extra="[random_init]\nseeds = 3\n" if run < 2 else "")  # fmt: skip
        tj.sweep(m, progress=False)
        manifests.append(m)
    return manifests


@pytest.mark.usefixtures("one_thread")
def test_trained_band_width_equals_the_spread_by_hand(swept):
    table = tj.compare(swept[:3])
    rows = pl.concat([Store(m.parent / f"store{i}").read() for i, m in enumerate(swept[:3])])
    local = rows.filter(pl.col("arm") == "local")
    assert len(table) == 2 * 3  # 2 blocks × 3 common steps
    for r in table.iter_rows(named=True):
        values = local.filter((pl.col("block") == r["block"]) & (pl.col("step") == r["step"]))["r2_lin"].to_numpy()
        assert len(values) == 3
        sd = np.std(values, ddof=1)
        assert r["trained_sd"] == pytest.approx(sd, rel=1e-9)
        assert r["trained_width"] == pytest.approx(2 * T975[2] * sd * math.sqrt(1 + 1 / 3), rel=2e-4)
        assert (r["trained_min"], r["trained_max"]) == pytest.approx((values.min(), values.max()), abs=1e-15)
        assert r["trained_mean"] == pytest.approx(values.mean(), rel=1e-12)
    # both manifests that drew random-init seeds 0, 1, 2 stored the same draws: each counts once
    init = rows.filter(pl.col("arm") == "random-init")
    assert init["experiment"].n_unique() == 2 and init.height == 2 * 3 * 2
    by_hand = init.filter(pl.col("experiment") == "run0").group_by("block").agg(pl.col("r2_lin").std())
    got = table.group_by("block").agg(pl.col("init_seeds").first(), pl.col("init_sd").first()).sort("block")
    assert got["init_seeds"].to_list() == [3, 3]
    assert got["init_sd"].to_list() == pytest.approx(by_hand.sort("block")["r2_lin"].to_list(), rel=1e-9)


@pytest.mark.usefixtures("one_thread")
def test_report_of_three_manifests_writes_the_page_and_json_carries_the_api_numbers(swept, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", *map(str, swept[:3]), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.html", "trained_band.png", "trained_band.svg"}
    md = (out / "report.md").read_text()
    assert "3 runs of one architecture on one evaluation" in md and "![trained band](trained_band.png)" in md
    capsys.readouterr()
    assert main(["report", *map(str, swept[:3]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    blocks = tj.compare(swept[:3], per="block")
    assert [b["trained_width"] for b in data["blocks"]] == pytest.approx(blocks["trained_width"].to_list())
    assert [r["label"] for r in data["runs"]] == ["run0", "run1", "run2"]
    assert "2 blocks in its rows" in data["experiments"][0]["architecture"]


def test_manifests_over_different_architectures_fail_in_one_line(swept, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default figures/<names>/ would land here
    before = sorted(tmp_path.rglob("*"))
    assert main(["report", str(swept[0]), str(swept[3])]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("trajectory: manifest run3.toml "), err
    assert "another architecture" in lines[0] and "num_hidden_layers 3 vs 2" in lines[0]
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


# -- synthetic stores with known answers ------------------------------------------------------------------------
def write_run(root: Path, name: str, series: dict[int, list[float]], *, init=True, data_hash="d4t4", config="abc",
              arm="hub", blocks=None, repo=MODEL, sha=None, weights=None, metric="m3tr1c",
              core=None) -> Path:  # fmt: skip
    """Experiment ``name`` in ``root/name``: its arm's ``series[step]`` (one value per block, commit ``sha`` when
    given) and, with ``init``, random-init seeds at 0.5 + OFFSETS; returns its manifest."""
    store = Store(root / name)

    def unit(arm_, seed, step, values, commit):
        prov = dict(experiment=name, arm=arm_, model=repo, seed=seed, revision="init" if seed is not None else
                    f"step{step}", step=step, commit=commit, data_hash=data_hash, metric_config=metric,
                    metric_core=core)  # fmt: skip
        store.write_unit(key_of(prov), [
            dict(prov, block=b, r2_lin=v, status="ok", pythia_step=step, weights_hash=f"{weights or name}{seed}{step}")
            for b, v in enumerate(values)
        ])  # fmt: skip

    n = blocks or len(next(iter(series.values())))
    for seed, off in enumerate(OFFSETS if init else []):
        unit("random-init", seed, 0, [0.5 + off] * n, f"init:gpt-neox/config:{config}")
    for step, values in series.items():
        unit(arm, None, step, values, sha or f"c{name}{step}")
    arms = [arm] + (["random-init"] if init else [])
    path = root / f"{name}.toml"
    path.write_text(
        f'[experiment]\nname = "{name}"\narms = {json.dumps(arms)}\n[model]\nrepo = "{repo}"\n'
        f"[schedule]\nsteps = {sorted(series)}\n"
        '[data]\ndataset = "Salesforce/wikitext:wikitext-103-raw-v1/validation-00000-of-00001.parquet"\n'
        f'tokens = 32768\nseq_len = 128\n[sweep]\nstore = "{root / name}"\n'
    )
    return path


def drop(at: float, steps=STEPS, start: int = 64) -> dict[int, float]:
    """0.5 until ``start``, then ``at``: below the band [0.452, 0.548] from ``start`` on when ``at`` < 0.45."""
    return {s: (at if s >= start else 0.5) for s in steps}


def series(*blocks: dict[int, float]) -> dict[int, list[float]]:
    return {s: [b[s] for b in blocks] for s in blocks[0]}


def test_runs_that_all_fall_below_agree_and_one_that_stays_inside_disagrees(tmp_path):
    below = [0.30, 0.301, 0.302]  # final sd 0.001 ≪ the init sd 0.0158
    inside = 0.5
    paths = [
        write_run(tmp_path, "a", series(drop(below[0]), drop(below[0])), init=True),
        write_run(tmp_path, "b", series(drop(below[1]), drop(inside)), init=False),
        write_run(tmp_path, "c", series(drop(below[2]), drop(0.2)), init=False),
    ]
    blocks = tj.compare(paths, per="block")
    b0, b1 = blocks.row(0, named=True), blocks.row(1, named=True)
    assert (b0["agreement"], b0["verdict"], b0["learned-below"]) == ("agree", "learned-below", 3)
    assert b0["reason"] == "all 3 runs learned-below"
    assert (b1["agreement"], b1["verdict"]) == ("disagree", "undetermined")
    assert b1["reason"] == "runs disagree: learned-below: a, c; within-band: b"
    # final values: F = (s_T / s_0)² on (2, 4) degrees of freedom; P(F ≤ x) = 1 − (1 + x/2)^(−2) in closed form
    s0 = float(np.std([0.5 + o for o in OFFSETS], ddof=1))
    for row, finals, answer in ((b0, below, "agree"), (b1, [below[0], inside, 0.2], "disagree")):
        x = (float(np.std(finals, ddof=1)) / s0) ** 2
        cdf = 1 - (1 + x / 2) ** -2
        assert row["p"] == pytest.approx(2 * min(cdf, 1 - cdf), rel=1e-9)
        assert row["final_agreement"] == answer and row["final_step"] == STEPS[-1]
        assert row["width_ratio"] == pytest.approx(
            (T975[2] * math.sqrt(4 / 3) * np.std(finals, ddof=1)) / (T975[4] * math.sqrt(6 / 5) * s0), rel=2e-3
        )


def test_an_undetermined_run_makes_the_block_undetermined_and_a_spread_like_init_is_undetermined(tmp_path):
    late = {s: (0.3 if s >= 3000 else 0.5) for s in STEPS}  # outside for 2 points only: not a persistent exit yet
    s0 = float(np.std([0.5 + o for o in OFFSETS], ddof=1))
    paths = [
        write_run(tmp_path, "a", series(drop(0.30)), init=True),
        write_run(tmp_path, "b", series(drop(0.30 + s0)), init=False),
        write_run(tmp_path, "c", series(late), init=False),
    ]
    row = tj.compare(paths, per="block").row(0, named=True)
    assert (row["agreement"], row["verdict"]) == ("undetermined", "undetermined")
    assert row["reason"] == "1 of 3 runs undetermined (c); the other 2 learned-below"
    paths[2] = write_run(tmp_path, "d", series(drop(0.30 - s0)), init=False)  # finals 0.3 ± s0: s_T = s_0
    row = tj.compare(paths, per="block").row(0, named=True)
    assert row["sd_ratio"] == pytest.approx(1.0, rel=1e-9)
    assert row["final_agreement"] == "undetermined" and row["agreement"] == "agree"


def test_different_schedules_are_compared_on_their_common_steps(tmp_path):
    dense = drop(0.3)
    sparse = {s: v for s, v in dense.items() if s not in (1, 2, 4)}
    paths = [write_run(tmp_path, "a", series(dense)), write_run(tmp_path, "b", series(sparse), init=False)]
    band = tj.compare(paths)
    assert band["step"].to_list() == sorted(sparse)
    assert band["trained_runs"].unique().to_list() == [2]


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(data_hash="0th3r"), "other evaluation data: data_hash 0th3r vs d4t4"),
        (dict(config="xyz"), "random-init draws are of config:xyz, not config:abc"),
        (dict(blocks=3), "its rows have 3 FFN blocks, not 2"),
        (dict(weights="a"), "both store one checkpoint (weights hash aNone1, at step 1 and 1)"),
    ],
)
def test_experiments_that_cannot_be_compared_are_refused_in_one_line(tmp_path, capsys, change, needle):
    a = write_run(tmp_path, "a", series(drop(0.3), drop(0.3)))
    values = series(*[drop(0.3)] * change.get("blocks", 2))
    b = write_run(tmp_path, "b", values, init=change.get("config") is not None, **change)
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("trajectory: manifest b.toml cannot be compared with a.toml")
    assert needle in err, err
    assert not (tmp_path / "out").exists()


def test_runs_whose_units_differ_only_in_companions_share_one_evaluation(tmp_path):
    """One run measured with companions at every step, one without: their R²_lin config (``metric_core``) is
    one, so they are one evaluation, as for the single report; the config with companions is no difference."""
    paths = [
        write_run(tmp_path, "a", series(drop(0.3)), metric="w1thc0mp", core="m3tr1c"),
        write_run(tmp_path, "b", series(drop(0.3)), init=False, metric="m3tr1c", core="m3tr1c"),
    ]
    blocks = tj.compare(paths, per="block")
    assert blocks["runs"].to_list() == [2]


def test_the_default_folder_is_named_after_the_experiments(tmp_path, monkeypatch, capsys):
    paths = [write_run(tmp_path, "a", series(drop(0.3))), write_run(tmp_path, "b", series(drop(0.3)), init=False)]
    monkeypatch.chdir(tmp_path)
    assert main(["report", *map(str, paths)]) == 0
    assert (tmp_path / "figures" / "a+b" / "report.html").is_file()
    from trajectory.experiments import default_name

    long = [f"pythia-160m-seed{i}" for i in range(1, 10)]
    assert default_name(long).startswith("pythia-160m-seed1+8-more-") and default_name(long) != default_name(long[:8])


def test_a_run_whose_step_0_is_outside_the_band_is_undetermined_and_so_are_the_final_values(tmp_path, capsys):
    """The single-run init check holds per run: a band of another init decides nothing, verdict or spread."""
    off = {**drop(0.301), 0: 0.9}  # step 0 far above the random-init band [0.452, 0.548]
    paths = [
        write_run(tmp_path, "a", series(drop(0.30))),
        write_run(tmp_path, "b", series(off), init=False),
        write_run(tmp_path, "c", series(drop(0.302)), init=False),
    ]
    row = tj.compare(paths, per="block").row(0, named=True)
    assert row["agreement"] == "undetermined" and row["reason"].startswith("1 of 3 runs undetermined (b)")
    assert row["p"] < 0.05 and row["final_agreement"] == "undetermined"  # s_T ≪ s_0, yet no yardstick
    assert row["final_reason"].startswith("step 0 of b lies outside the random-init band")
    assert main(["report", *map(str, paths), "--json"]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("b: step 0 of hub lies outside its random-init band")


def test_hub_configs_in_the_cache_are_compared_field_by_field(tmp_path, capsys, monkeypatch):
    """Two Hub runs whose ``config.json`` the HF cache holds at their stored commits: a config saved in another
    dtype, with other special-token ids, compares equal; another FFN width is refused, naming the field."""
    from builders import tiny_config
    from hubserver import point_client_at

    cache = tmp_path / "hf"
    point_client_at(monkeypatch, "http://127.0.0.1:9", cache, offline=True)  # nothing listens: the cache only

    def cached(repo: str, sha: str, **overrides) -> None:
        snap = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / sha
        snap.mkdir(parents=True)
        tiny_config("gpt_neox", **overrides).to_json_file(snap / "config.json")

    cached("org/run-a", "a" * 40)
    cached("org/run-b", "b" * 40, torch_dtype="float16", eos_token_id=7)
    cached("org/run-c", "c" * 40, intermediate_size=64)
    a, b, c = (
        write_run(tmp_path, f"run-{x}", series(drop(0.3)), init=x == "a", repo=f"org/run-{x}", sha=x * 40)
        for x in "abc"
    )
    from trajectory.experiments import read_experiments

    exps = read_experiments([tj.load_manifest(a), tj.load_manifest(b)])
    assert all("model config gpt_neox (read offline)" in e.evidence() for e in exps.items)
    assert tj.compare([a, b], per="block")["runs"].to_list() == [2]
    assert main(["report", str(a), str(c), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "manifest run-c.toml cannot be compared with run-a.toml: another architecture" in err
    assert "intermediate_size 64 vs 128" in err, err


def test_without_random_init_draws_the_trained_band_stands_and_every_answer_is_undetermined(tmp_path):
    paths = [write_run(tmp_path, x, series(drop(0.3 + 0.001 * i)), init=False) for i, x in enumerate("abc")]
    band = tj.compare(paths)
    assert band["trained_sd"].to_list()[-1] == pytest.approx(0.001, rel=1e-9) and band["init_low"].is_null().all()
    row = tj.compare(paths, per="block").row(0, named=True)
    assert (row["agreement"], row["undetermined"], row["final_agreement"]) == ("undetermined", 3, "undetermined")


def test_the_trained_band_figure_names_the_step_axis_it_draws(tmp_path, monkeypatch):
    """A dense schedule (doubling to 64, then even steps to 2000) is drawn on the log-then-linear axis; its label
    must say so, not "symlog"."""
    from trajectory.experiments import compare, read_experiments
    from trajectory.multireport import draw

    steps = [0, 1, 2, 4, 8, 16, 32, 64, *range(200, 2001, 200)]
    paths = [write_run(tmp_path, n, series(drop(0.3, steps)), init=n == "a") for n in ("a", "b")]
    figures = []
    monkeypatch.setattr("trajectory.plots.runs.save", lambda fig, out, name: figures.append(fig) or ())
    exps = read_experiments([tj.load_manifest(p) for p in paths])
    draw(exps, compare(exps), tmp_path / "out")
    labels = {ax.get_xlabel() for ax in figures[0].axes if ax.get_visible() and ax.get_xlabel()}
    assert labels == {"training step (optimizer updates; logarithmic to 64, linear after)"}, labels
