"""Revisions discovered among a repo's branches (`[schedule] rule = "branches"`): parsing, ordering, thinning,
and an OLMo-style repo served by the local Hub stand-in, swept, reported and verified."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from builders import tiny_model
from hubserver import HubServer, HubState, point_client_at, serve_checkpoints

from trajectory.cli import main
from trajectory.config import Schedule
from trajectory.discovery import BranchRule, log_spaced
from trajectory.errors import ConfigError, ManifestError, RevisionNotFoundError
from trajectory.manifest import load_manifest
from trajectory.scheduler import SweepOptions, run_sweep
from trajectory.sources.hub import RetryPolicy
from trajectory.store import Store, with_discovered_schedule

OLMO = r"step(?P<step>\d+)-tokens(?P<tokens>\d+)(?P<unit>B)"
REPO = "allenai/OLMo-tiny"
pytestmark = pytest.mark.usefixtures("one_thread")
#: OLMo-style branch name → (step, tokens seen), written out by hand
BRANCHES = {
    "step0-tokens0B": (0, 0),
    "step1000-tokens4B": (1000, 4 * 10**9),
    "step2000-tokens8B": (2000, 8 * 10**9),
    "step3000-tokens13B": (3000, 13 * 10**9),
    "step10000-tokens41B": (10000, 41 * 10**9),
}


# -- parsing and selecting ------------------------------------------------------------------------------------
def test_olmo_names_are_kept_parsed_and_ordered_by_step_not_by_name():
    names = sorted(BRANCHES) + ["main", "stage2-ingredient1-step1000-tokens5B", "step500", "step7-tokens3Q"]
    assert sorted(BRANCHES)[2] == "step10000-tokens41B"  # by name, step 10000 would come before step 2000
    got = BranchRule(OLMO).select(names, REPO)
    assert got == [(step, name, tokens) for name, (step, tokens) in sorted(BRANCHES.items(), key=lambda kv: kv[1])]


def test_the_default_pattern_reads_tokens_when_the_name_carries_them_and_none_otherwise():
    got = BranchRule().select(["step0", "step2000-tokens8B", "step3000-tokens250M", "step4-tokens7"], "r")
    assert got == [(0, "step0", None), (4, "step4-tokens7", 7), (2000, "step2000-tokens8B", 8 * 10**9),
                   (3000, "step3000-tokens250M", 250 * 10**6)]  # fmt: skip


def test_thin_keeps_every_kth_and_the_last():
    names = [f"step{s}" for s in range(0, 11)]
    assert [s for s, *_ in BranchRule(thin=3).select(names, "r")] == [0, 3, 6, 9, 10]
    assert [s for s, *_ in BranchRule(thin=5).select(names, "r")] == [0, 5, 10]  # the last is already kept


def test_log_points_on_a_dense_grid_hit_the_log_spaced_targets():
    """Steps 0…100000 (every step exists): 6 points = step 0, then the 5 integers nearest 10^(5j/4), j = 0…4."""
    steps = list(range(0, 100_001))
    want = [0] + [round(10 ** (5 * j / 4)) for j in range(5)]
    assert want == [0, 1, 18, 316, 5623, 100000]
    assert [steps[i] for i in log_spaced(steps, 6)] == want


def test_log_points_on_a_coarse_grid_take_the_next_free_step():
    """Steps 1000…10000 every 1000, 5 points: targets 1000·10^(j/4) = 1000, 1778, 3162, 5623, 10000; nearest in
    log distance among the steps after the previous pick: 1000, 2000, 3000, 6000 (|ln 6000/5623| = 0.065 <
    |ln 5000/5623| = 0.117), 10000."""
    steps = list(range(1000, 10_001, 1000))
    assert [steps[i] for i in log_spaced(steps, 5)] == [1000, 2000, 3000, 6000, 10000]
    olmo = list(range(1000, 738_001, 1000)) + [738_020]  # OLMo-1B-hf's grid: targets crowd at the start
    kept = [olmo[i] for i in log_spaced(olmo, 40)]
    assert len(kept) == 40 and kept == sorted(set(kept)) and kept[0] == 1000 and kept[-1] == 738_020
    ratios = [math.log(b / a) for a, b in zip(kept[-10:], kept[-9:])]  # the tail follows the targets' ratio
    assert all(abs(r - math.log(738.02) / 39) < 0.03 for r in ratios), ratios
    assert log_spaced(steps, 50) == list(range(10))  # fewer steps than points: all of them


def test_two_branches_of_one_step_or_none_at_all_are_one_line_errors():
    with pytest.raises(ConfigError, match="'step1000-tokens4B' and 'step1000-tokens5B' of r both carry step 1000"):
        BranchRule(OLMO).select(["step1000-tokens4B", "step1000-tokens5B"], "r")
    with pytest.raises(RevisionNotFoundError, match="no branch of r matches"):
        BranchRule(OLMO).select(["main", "step1000"], "r")


def _manifest(path, repo, store, text_file, schedule: str, arms=("hub",), extra: str = ""):
    path.write_text(f"""
[experiment]
name = "{path.stem}"
arms = {list(arms)!r}
[model]
repo = "{repo}"
[schedule]
{schedule}
[data]
text_file = "{text_file}"
tokens = 2048
seq_len = 64
[sweep]
store = "{store}"
{extra}
""")
    return path


@pytest.mark.parametrize(
    "schedule, field",
    [
        ("rule = 'branches'\nthin = 2\nlog_points = 4", "give thin or log_points, not both"),
        ("rule = 'branches'\npattern = 'step(\\d+)'", "needs a group (?P<step>"),
        ("rule = 'branches'\npattern = 'step(?P<step>\\d+'", "is not a regular expression"),
        ("rule = 'branches'\nlog_points = 1", "log_points must be an integer ≥ 2"),
        ("rule = 'branches'\nthin = 0", "thin must be an integer ≥ 1"),
        ("rule = 'branches'\nlast = 5", "'last' must be absent when rule = 'branches'"),
        ("rule = 'pythia'\nthin = 2", "'thin' must be absent unless rule = 'branches'"),
        ("rule = 'weekly'", "'pythia', 'dense', 'segments', 'branches', 'commits', 'repos'"),
    ],
)
def test_bad_branch_rules_are_one_line_naming_the_field(tmp_path, text_file, schedule, field):
    path = _manifest(tmp_path / "bad.toml", REPO, tmp_path / "s", text_file, schedule)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert str(err.value).startswith("manifest bad.toml: [schedule]") and field in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_an_undiscovered_schedule_says_to_sweep_first(tmp_path, text_file, capsys):
    path = _manifest(tmp_path / "olmo.toml", REPO, tmp_path / "s", text_file, f"rule = 'branches'\npattern = '{OLMO}'")
    m = load_manifest(path)
    assert m.schedule.rule == BranchRule(OLMO) and not m.schedule.resolved
    with pytest.raises(ConfigError, match="run `trajectory sweep` on the manifest"):
        m.expected_steps()
    assert with_discovered_schedule(m) == m  # nothing recorded: unchanged


MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
#: Branch names seen in public material on each repo (model cards, code that loads them), and what they carry.
SUITES = {
    "olmo-1b": (
        "allenai/OLMo-1B-hf",
        {"step1000-tokens4B": (1000, 4 * 10**9), "step20000-tokens84B": (20000, 84 * 10**9),
         "step738020-tokens3094B": (738020, 3094 * 10**9), "main": None},
    ),
    "olmo-2-1b": (
        "allenai/OLMo-2-0425-1B",
        {"stage1-step10000-tokens21B": (10000, 21 * 10**9), "stage1-step1700000-tokens3566B": (1700000, 3566 * 10**9),
         "stage2-ingredient3-step12000-tokens26B": None, "main": None},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SUITES))
def test_suite_manifests_load_and_read_their_published_branch_names(name):
    repo, names = SUITES[name]
    m = load_manifest(MANIFESTS / f"{name}.toml")
    assert m.name == name and m.repo == repo and m.arms == ("hub", "random-init")
    assert not m.schedule.resolved and m.schedule.rule.log_points == 40
    assert {branch: m.schedule.rule.parse(branch) for branch in names} == names
    assert m.store_dir == Path("store") / name and m.data.tokens >= 20 * 2048 / (1 - m.metric.heldout_frac)


# -- an OLMo-style repo on the local Hub stand-in -------------------------------------------------------------
@pytest.fixture(scope="module")
def olmo_ckpts(tmp_path_factory, tokenizer):
    """Tiny OLMo revisions named like allenai's branches, one folder each (distinct weights per step)."""
    root = tmp_path_factory.mktemp("olmo")
    for name, (step, _) in BRANCHES.items():
        model = tiny_model("olmo", seed=step)
        model.save_pretrained(root / name)
        (root / name / "generation_config.json").unlink(missing_ok=True)
        tokenizer.save_pretrained(root / name)
    return root


@pytest.fixture
def olmo_hub(monkeypatch, tmp_path, olmo_ckpts):
    state = HubState()
    serve_checkpoints(state, REPO, olmo_ckpts)  # also serves "main", which the pattern must not keep
    state.add_revision(REPO, "stage2-ingredient1-step1000-tokens5B", {"config.json": b"{}"})
    with HubServer(state) as server:
        point_client_at(monkeypatch, server.endpoint, tmp_path / "cache")
        yield server


def sweep(manifest):
    return run_sweep(manifest, SweepOptions(progress=False, retry=RetryPolicy(attempts=2, wait=0.01)))


def test_olmo_branches_are_discovered_ordered_by_step_and_measured_with_tokens_seen(
    olmo_hub, olmo_ckpts, tmp_path, text_file, capsys, monkeypatch
):
    path = _manifest(
        tmp_path / "olmo.toml", REPO, tmp_path / "store", text_file, f"rule = 'branches'\npattern = '{OLMO}'"
    )
    report = sweep(load_manifest(path))
    assert report.count("done") == 5 and not report.failed and not report.gaps, report.summary()
    listings = [r for r in olmo_hub.state.requests if r.path.split("?")[0].endswith("/refs")]
    assert len(listings) == 1  # one list_repo_refs call both discovers and pins
    rows = Store(tmp_path / "store").read().sort("step", "block")
    want = sorted(BRANCHES.values())
    per_unit = rows.unique(["revision"], keep="first").sort("step")
    assert per_unit.select("step", "tokens_seen").rows() == want  # item 4: tokens seen from the name
    served = olmo_hub.state.repos[REPO]
    assert all(served[r].commit == c for r, c in per_unit.select("revision", "commit").rows())
    assert rows.height == 5 * 2 and rows.filter(pl.col("status") != "ok").is_empty()

    # figures, report and verify see the discovered schedule, read back from the store
    resolved = with_discovered_schedule(load_manifest(path))
    assert resolved.schedule.steps == tuple(s for s, _ in want)
    assert [resolved.schedule.tokens_at(r) for r in resolved.schedule.revisions()] == [t for _, t in want]
    assert main(["report", str(path), "--out", str(tmp_path / "fig")]) == 0
    md = (tmp_path / "fig" / "report.md").read_text()
    assert "0 of 5 scheduled steps have no usable row" in md  # the discovered schedule, all measured
    assert main(["verify", str(path)]) == 0, capsys.readouterr().out

    # offline, the same branches are found in the cache's refs/ and nothing is measured again
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    olmo_hub.state.reset_counters()
    again = sweep(load_manifest(path))
    assert again.count("cached") == 5 and again.count("done") == 0 and olmo_hub.state.requests == []


def test_thinning_and_a_branch_published_later(olmo_hub, olmo_ckpts, tmp_path, text_file):
    schedule = f"rule = 'branches'\npattern = '{OLMO}'\nthin = 2"
    path = _manifest(tmp_path / "olmo.toml", REPO, tmp_path / "store", text_file, schedule)
    assert sweep(load_manifest(path)).count("done") == 3
    steps = sorted(set(Store(tmp_path / "store").read()["step"]))
    assert steps == [0, 2000, 10000]  # steps 0, 1000, 2000, 3000, 10000: every 2nd, and the last
    from hubserver import files_of

    olmo_hub.state.add_revision(REPO, "step20000-tokens82B", files_of(olmo_ckpts / "step3000-tokens13B"))
    again = sweep(load_manifest(path))  # each sweep lists the branches afresh: 0, 2000, 10000, 20000
    assert again.count("cached") == 3 and again.count("done") == 1
    rows = Store(tmp_path / "store").read().filter(pl.col("step") == 20000)
    assert set(rows["tokens_seen"]) == {82 * 10**9} and set(rows["revision"]) == {"step20000-tokens82B"}


def test_the_record_is_read_back_only_for_its_own_repo_and_rule(tmp_path, text_file):
    path = _manifest(
        tmp_path / "olmo.toml", REPO, tmp_path / "store", text_file, f"rule = 'branches'\npattern = '{OLMO}'"
    )
    m = load_manifest(path)
    found = Schedule(((0, "step0-tokens0B"), (1000, "step1000-tokens4B")), (0, 4 * 10**9), m.schedule.rule)
    Store(m.store_dir).write_schedule(m, found)
    assert with_discovered_schedule(m).schedule == found
    thinned = replace(m, schedule=Schedule((), rule=BranchRule(OLMO, log_points=3)))
    assert not with_discovered_schedule(thinned).schedule.resolved
    assert not with_discovered_schedule(replace(m, repo="allenai/OLMo-other")).schedule.resolved
    Store(m.store_dir).schedule_path(m.name).write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable schedule record"):
        assert not with_discovered_schedule(m).schedule.resolved


def test_local_checkpoint_folders_are_discovered_too(olmo_ckpts, tmp_path, text_file):
    """The random-init arm, planned first, reads the architecture from a sub-folder before any discovery."""
    schedule = f"rule = 'branches'\npattern = '{OLMO}'\nlog_points = 3"
    arms, extra = ("random-init", "local"), "[random_init]\nseeds = 1"
    path = _manifest(tmp_path / "mine.toml", olmo_ckpts, tmp_path / "store", text_file, schedule, arms, extra)
    path.write_text(path.read_text().replace("repo =", "path ="))
    assert sweep(load_manifest(path)).count("done") == 1 + 3
    rows = Store(tmp_path / "store").read().filter(pl.col("arm") == "local")
    # step 0, then log-spaced targets 1000 and 10000 among the positive steps
    assert sorted(set(rows.select("step", "tokens_seen").rows())) == [(0, 0), (1000, 4 * 10**9), (10000, 41 * 10**9)]


def test_a_pattern_that_matches_no_branch_is_one_line(olmo_hub, tmp_path, text_file, capsys):
    schedule = "rule = 'branches'\npattern = 'stage1-step(?P<step>\\d+)'"
    path = _manifest(tmp_path / "olmo.toml", REPO, tmp_path / "store", text_file, schedule)
    code = main(["sweep", str(path), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"no branch of {REPO} matches [schedule] pattern" in err
    assert olmo_hub.state.downloads() == []  # nothing fetched
