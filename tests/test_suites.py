"""Checkpoint suites addressed by commits on one branch (Pico) or by one repo per checkpoint (MultiBERTs,
TinyLlama), steps that names don't carry (Amber's step map), and a suite that serves final weights under an
early step's name: all through the local Hub stand-in and the real huggingface_hub client."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from builders import tiny_model
from hubserver import HubServer, HubState, files_of, point_client_at, serve_checkpoints

from trajectory.cli import main
from trajectory.discovery import BranchRule
from trajectory.errors import ConfigError, RevisionNotFoundError
from trajectory.manifest import load_manifest
from trajectory.scheduler import SweepOptions, run_sweep
from trajectory.sources.hub import RetryPolicy
from trajectory.store import Store
from trajectory.verify import verify_store

pytestmark = pytest.mark.usefixtures("one_thread")
PICO = "pico-lm/pico-decoder-tiny"
PICO_STEPS = [0, 100, 200, 300, 400]
BERT_STEPS = [0, 20, 40, 60]  # thousands, as the repo names count them


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    """Tiny GPT-NeoX folders, one per step, distinct weights each."""
    root = tmp_path_factory.mktemp("suite")
    for step in sorted(set(PICO_STEPS + BERT_STEPS)):
        folder = root / f"s{step}"
        tiny_model("gpt_neox", seed=step).save_pretrained(folder)
        (folder / "generation_config.json").unlink(missing_ok=True)
        tokenizer.save_pretrained(folder)
    return root


@pytest.fixture
def suite_hub(monkeypatch, tmp_path, models):
    state = HubState()
    for step in PICO_STEPS:  # Pico: one commit per checkpoint on one branch, titled "… -- Step N"
        state.add_revision(PICO, f"c{step}", files_of(models / f"s{step}"), title=f"Update model -- Step {step}")
    state.add_revision(PICO, "main", files_of(models / f"s{PICO_STEPS[-1]}"))
    for k in BERT_STEPS:  # MultiBERTs: one repo per checkpoint
        state.add_revision(f"google/multiberts-seed_0-step_{k}k", "main", files_of(models / f"s{k}"))
    state.add_revision("google/multiberts-seed_1-step_20k", "main", files_of(models / "s20"))  # another seed
    with HubServer(state) as server:
        point_client_at(monkeypatch, server.endpoint, tmp_path / "cache")
        yield server


def manifest(tmp_path, text_file, repo: str, schedule: str):
    path = tmp_path / "suite.toml"
    path.write_text(f"""
[experiment]
name = "suite"
arms = ["hub"]
[model]
repo = "{repo}"
[schedule]
{schedule}
[data]
text_file = "{text_file}"
tokens = 2048
seq_len = 64
[sweep]
store = "{tmp_path / "store"}"
""")
    return load_manifest(path)


def sweep(m):
    return run_sweep(m, SweepOptions(progress=False, retry=RetryPolicy(attempts=2, wait=0.01)))


def stored_steps(tmp_path) -> list[tuple[int, str, str]]:
    rows = Store(tmp_path / "store").read().select("step", "revision", "model").unique().sort("step")
    return [tuple(r) for r in rows.iter_rows()]


def test_commits_on_one_branch_are_discovered_pinned_thinned_and_rerun_offline(
    suite_hub, tmp_path, text_file, monkeypatch
):
    m = manifest(tmp_path, text_file, PICO, "rule = 'commits'\npattern = '.* -- Step (?P<step>\\d+)'\nthin = 2")
    report = sweep(m)
    assert report.count("done") == 3 and not report.failed and not report.gaps, report.summary()
    commits = {r.title: r.commit for r in suite_hub.state.repos[PICO].values() if r.title}
    kept = [0, 200, 400]  # every 2nd commit by step, and the last
    assert stored_steps(tmp_path) == [(s, commits[f"Update model -- Step {s}"], PICO) for s in kept]
    point_client_at(monkeypatch, suite_hub.endpoint, tmp_path / "cache", offline=True)
    suite_hub.state.reset_counters()
    again = sweep(m)
    assert again.count("cached") == 3 and again.count("done") == 0, again.summary()
    assert suite_hub.state.requests == []  # offline: the schedule recorded in the store, pinned from the cache


def test_one_repo_per_checkpoint_is_discovered_by_name_with_steps_in_thousands(
    suite_hub, tmp_path, text_file, monkeypatch, capsys
):
    schedule = "rule = 'repos'\npattern = 'multiberts-seed_0-step_(?P<step>\\d+)k'\nstep_scale = 1000\nlog_points = 3"
    m = manifest(tmp_path, text_file, "google", schedule)
    report = sweep(m)
    assert report.count("done") == 3 and not report.failed, report.summary()
    # 3 log-spaced of 0, 20k, 40k, 60k: step 0, then the first and last positive steps and the one nearest √(20k·60k)
    want = [
        (0, "multiberts-seed_0-step_0k"),
        (20_000, "multiberts-seed_0-step_20k"),
        (60_000, "multiberts-seed_0-step_60k"),
    ]
    assert [(s, r) for s, r, _ in stored_steps(tmp_path)] == want
    assert {model for *_, model in stored_steps(tmp_path)} == {"google"}  # the repo is model/revision
    point_client_at(monkeypatch, suite_hub.endpoint, tmp_path / "cache", offline=True)
    suite_hub.state.reset_counters()
    again = sweep(m)
    assert again.count("cached") == 3 and again.count("done") == 0 and suite_hub.state.requests == []
    assert main(["verify", str(m.source), "--store", str(tmp_path / "store")]) == 0, capsys.readouterr().out


@pytest.mark.parametrize(
    "repo, schedule, message",
    [
        (PICO, "rule = 'commits'\npattern = 'Release (?P<step>\\d+)'", "no commit titled of pico-lm"),
        (PICO, "rule = 'commits'\npattern = '.* -- Step \\d*(?P<step>0)'", "both carry step 0"),
        ("google", "rule = 'repos'\npattern = 'gpt2-(?P<step>\\d+)'", "no repo of google matches"),
        ("google", "rule = 'repos'\npattern = 'multiberts-seed_\\d-step_(?P<step>\\d+)k'", "both carry step 20"),
    ],
)
def test_no_match_or_two_checkpoints_at_one_step_is_one_line(
    suite_hub, tmp_path, text_file, capsys, repo, schedule, message
):
    m = manifest(tmp_path, text_file, repo, schedule)
    assert main(["sweep", str(m.source), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trajectory: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "store" / "units").exists() or not any((tmp_path / "store" / "units").iterdir())


def test_a_step_map_gives_steps_and_tokens_to_names_that_carry_none():
    rule = BranchRule(pattern=r"ckpt_\d{3}", step_map=(("ckpt_000", 0, 0), ("ckpt_001", 100, 4_000_000)))
    got = rule.select(["ckpt_001", "ckpt_000", "ckpt_002", "main"], "LLM360/Amber")
    assert got == [(0, "ckpt_000", 0), (100, "ckpt_001", 4_000_000)]  # ckpt_002 is not in the map: not kept
    with pytest.raises(ConfigError, match=r"needs a group \(\?P<step>"):
        BranchRule(pattern=r"ckpt_\d{3}")
    with pytest.raises(RevisionNotFoundError):
        rule.select(["main"], "LLM360/Amber")


def test_a_checkpoint_serving_the_final_weights_under_an_early_step_is_flagged(
    tmp_path, text_file, models, monkeypatch, capsys
):
    root = tmp_path / "ck"
    for step in (0, 100, 200, 300):
        shutil.copytree(models / f"s{step}", root / f"step{step}")
    shutil.rmtree(root / "step100")
    shutil.copytree(models / "s300", root / "step100")  # pythia-2.8b style: step100 holds the final weights
    state = HubState()
    serve_checkpoints(state, "EleutherAI/pythia-mislabelled", root)
    with HubServer(state) as server:
        point_client_at(monkeypatch, server.endpoint, tmp_path / "cache")
        m = manifest(tmp_path, text_file, "EleutherAI/pythia-mislabelled", "steps = [0, 100, 200, 300]")
        report = sweep(m)
    assert "mislabelled: step100 (same weights as the final checkpoint, step300)" in report.summary()
    found = [f for f in verify_store(tmp_path / "store").findings if f.kind == "mislabelled"]
    assert [(f.where, f.detail) for f in found] == [
        ("EleutherAI/pythia-mislabelled@step100", "same weights as the final checkpoint (step300)")
    ]


# -- every suite's manifest, planned under its real names --------------------------------------------------------
#: Manifest → (names its checkpoints carry upstream, as the suites' cards give them → the step each means).
SUITE_NAMES = {
    "smollm2-135m": {"step-1000": 1000, "step-20000": 20000},
    "bloom-560m": {"global_step1000": 1000, "global_step10000": 10000},
    "amber": {"ckpt_000": 0, "ckpt_100": 100, "ckpt_359": 359},
    "pico-decoder-tiny": {"Save checkpoint -- Step 0": 0, "Save checkpoint -- Step 1000": 1000},
    "multiberts-seed0": {"multiberts-seed_0-step_0k": 0, "multiberts-seed_0-step_20k": 20000},
    **{f"multiberts-seed{s}": {f"multiberts-seed_{s}-step_0k": 0, f"multiberts-seed_{s}-step_20k": 20000}
       for s in (1, 2, 3)},
    "multiberts-seed4": {"multiberts-seed_4-step_2000k": 2_000_000, "multiberts-seed_4-step_40k": 40000},
    "tinyllama": {"TinyLlama-1.1B-intermediate-step-1431k-3T": 1_431_000,
                  "TinyLlama-1.1B-intermediate-step-480k-1T": 480_000},
    "gpt2": {"main": 1},
    "llama-160m": {"main": 1},
    **{f"pythia-160m-{k}-seed{s}": {"step0": 0, "step143000": 143000} for k in ("data", "weight") for s in (1, 2, 3)},
    **{f"crfm-{run}": {"checkpoint-0": 0, "checkpoint-1950": 1950, "checkpoint-400000": 400000} for run in (
        "alias-gpt2-small-x21", "battlestar-gpt2-small-x49", "caprica-gpt2-small-x81", "darkmatter-gpt2-small-x343",
        "expanse-gpt2-small-x777", "arwen-gpt2-medium-x21", "beren-gpt2-medium-x49", "celebrimbor-gpt2-medium-x81",
        "durin-gpt2-medium-x343", "eowyn-gpt2-medium-x777")},
}  # fmt: skip
MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


def serve_suite(state: HubState, m, names: dict[str, int], files: dict[str, bytes]) -> None:
    """``names`` served as the manifest's rule addresses checkpoints: branches, commits or repos."""
    rule = m.schedule.rule.rule if m.schedule.rule else "branches"
    for name in names:
        if rule == "repos":
            state.add_revision(f"{m.repo}/{name}", "main", files)
        elif rule == "commits":
            state.add_revision(m.repo, f"c-{name}", files, title=name)
        else:
            state.add_revision(m.repo, name, files)
    if rule != "repos":
        state.add_revision(m.repo, "main", files)


def test_every_suite_manifest_is_listed_here():
    """Every manifest that walks Hub checkpoints is planned below, but those older tests already cover."""
    hub = {p.stem for p in MANIFESTS.glob("*.toml") if "hub" in load_manifest(p).arms}
    new = hub - set(SUITE_NAMES)
    older = {"olmo-1b", "olmo-2-1b", "pythia-160m-deduped"}
    older |= {f"pythia-{s}" for s in ("14m", "31m", "70m", "160m", "410m")} | {
        f"pythia-160m-seed{s}" for s in range(1, 10)
    }
    assert new <= older, f"manifests without a planning test here: {sorted(new - older)}"


@pytest.mark.parametrize("name", sorted(SUITE_NAMES))
def test_each_suite_plans_under_its_real_names_online_then_offline(name, models, tmp_path, text_file, monkeypatch):
    from dataclasses import replace

    from trajectory.arms.checkpoints import CheckpointArm
    from trajectory.config import DataSpec
    from trajectory.store import with_discovered_schedule

    m = load_manifest(MANIFESTS / f"{name}.toml")
    m = replace(m, data=DataSpec("text", str(text_file), tokens=2048, seq_len=64), store_dir=tmp_path / "store")
    names = SUITE_NAMES[name]
    state = HubState()
    serve_suite(state, m, names, files_of(models / "s0"))
    options = SweepOptions(progress=False, retry=RetryPolicy(attempts=1, wait=0.01))
    with HubServer(state) as server:
        for offline in (False, True):
            point_client_at(monkeypatch, server.endpoint, tmp_path / "cache", offline=offline)
            units = CheckpointArm(with_discovered_schedule(m) if offline else m, "hub", options).plan()
            ready = {u.provenance.revision: u.provenance.step for u in units if u.ready}
            if m.schedule.rule is not None and m.schedule.rule.rule == "commits":
                titles = {r.commit: r.title for r in state.repos[m.repo].values() if r.title}
                ready = {titles[c]: s for c, s in ready.items()}
            assert ready == names, (offline, ready)


# -- does init or data order decide? two groups of runs, answer planted --------------------------------------------
def test_which_group_decides_follows_the_f_rule_on_planted_runs(tmp_path, capsys):
    """Block 0: the data-order runs end together (sd 0.001), the init runs apart (sd 0.1): the init decides.
    Block 1: the other way round. Block 2: both spread alike: undetermined."""
    import json

    from test_multireport import STEPS, drop, series, write_run

    together, apart, alike = [0.30, 0.301, 0.302], [0.20, 0.30, 0.40], [0.25, 0.30, 0.35]
    data = [write_run(tmp_path, f"d{i}", series(drop(together[i]), drop(apart[i]), drop(alike[i])), init=i == 0)
            for i in range(3)]  # fmt: skip
    weight = [write_run(tmp_path, f"w{i}", series(drop(apart[i]), drop(together[i]), drop(alike[i])), init=i == 0)
              for i in range(3)]  # fmt: skip
    args = ["report", *map(str, data), "--against", *map(str, weight)]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    by_block = {b["block"]: b for b in out["blocks"]}
    assert [by_block[b]["decides"] for b in (0, 1, 2)] == ["w0+w1+w2", "d0+d1+d2", "undetermined"]
    # F(2, 2): P(F ≤ x) = x / (1 + x) in closed form, so the two-sided p is 2 / (1 + x) for x > 1
    x = (0.1 / 0.001) ** 2
    assert by_block[0]["p"] == pytest.approx(2 / (1 + x), rel=1e-6) and by_block[2]["p"] == pytest.approx(1.0)
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "groups.md").read_text()
    assert "Block 0: s(d0+d1+d2) = 0.001" in page and "the w0+w1+w2 runs spread further" in page
    assert (tmp_path / "out" / "d0+d1+d2" / "report.md").is_file() and STEPS[-1] == 4000
