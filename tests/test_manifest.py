"""Manifests: the shipped ones parse; bad ones fail in one line naming file, field and expectation."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trajectory.config import pythia_steps
from trajectory.errors import TrajectoryError
from trajectory.manifest import load_manifest

MANIFESTS = sorted((Path(__file__).parent.parent / "manifests").glob("*.toml"))


def test_pythia_schedule_has_the_154_public_revisions():
    steps = pythia_steps()
    assert len(steps) == 154
    assert steps[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert steps[-1] == 143_000 and all(b - a == 1000 for a, b in zip(steps[11:], steps[12:]))


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_every_shipped_manifest_parses(path):
    m = load_manifest(path)
    assert m.name and m.arms and (m.schedule.steps if m.schedule.rule is None else m.schedule.rule.pattern)
    assert m.data.tokens >= m.data.seq_len


def write(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


BASE = '[model]\nrepo = "EleutherAI/pythia-14m"\n'


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[model\nrepo = 1", "malformed TOML"),
        (BASE + "[data]\ntokens = 'many'\n", "[data] 'tokens' must be a non-negative integer, got 'many'"),
        (BASE + "[data]\ntoknes = 5\n", "[data] 'toknes' must be one of"),
        (BASE + "[metric]\nheldout_frac = 1.5\n", "heldout-frac must lie in (0, 1), got 1.5"),
        (BASE + "[experiment]\narms = ['hub', 'magic']\n", "[experiment] 'arms' must be a non-empty list"),
        (BASE + "[schedule]\nsteps = [1, -2]\n", "[schedule] 'steps' must be a non-empty list of non-negative"),
        (BASE + "[schedule]\nrevision_format = 'checkpoint'\n", "containing '{step}'"),
        (BASE + "[data]\ntokens = 10\nseq_len = 128\n", "[data] 'tokens' must be an integer ≥ seq_len (128)"),
        (BASE + "[data]\ntext_file = 'a.txt'\ndataset = 'x:y'\n", "[data] 'dataset' must be absent"),
        ("[model]\n", "[model] 'repo' must be given"),
        (BASE + "[twin]\nlr = 'fast'\n", "[twin] 'lr' must be a number, got 'fast'"),
        (BASE + "[random_init]\nseeds = [0, 'one']\n", "[random_init] 'seeds' must be a count or a list"),
        (BASE + "[colours]\nx = 1\n", "[colours] must be one of the sections"),
    ],
)
def test_bad_manifest_is_one_line_naming_file_and_field(tmp_path, text, needle):
    with pytest.raises(TrajectoryError) as err:
        load_manifest(write(tmp_path, text))
    message = str(err.value)
    assert "exp.toml" in message and needle in message and "\n" not in message


def test_missing_manifest(tmp_path):
    with pytest.raises(TrajectoryError, match="manifest not found"):
        load_manifest(tmp_path / "nope.toml")


def test_explicit_steps_and_relative_text_file(tmp_path):
    m = load_manifest(write(tmp_path, BASE + "[schedule]\nsteps = [8, 0, 8, 2]\n[data]\ntext_file = 'eval.txt'\n"))
    assert m.schedule.revisions() == ["step0", "step2", "step8"]
    assert m.data.kind == "text" and Path(m.data.path) == tmp_path / "eval.txt"


toml_scalars = st.one_of(
    st.integers(-5, 10**6),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.booleans(),
    st.lists(st.integers(-3, 10), max_size=4),
)
fields = st.sampled_from(["tokens", "seq_len", "repo", "arms", "steps", "seeds", "lr", "heldout_frac", "x"])
sections = st.sampled_from(["model", "data", "schedule", "experiment", "metric", "twin", "random_init", "sweep"])


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').encode("unicode_escape").decode() + '"'
    if isinstance(v, float):
        return repr(v) if v == v and abs(v) != float("inf") else "0.5"
    return repr(v)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(sections, st.dictionaries(fields, toml_scalars, max_size=3), max_size=4))
def test_any_manifest_gives_a_manifest_or_a_clear_error(tmp_path, doc):
    text = "".join(
        f"[{sec}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in tab.items()) for sec, tab in doc.items()
    )
    try:
        m = load_manifest(write(tmp_path, text))
    except TrajectoryError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("manifest")
    else:
        assert m.schedule.steps and m.data.tokens >= m.data.seq_len


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_a_clear_error(tmp_path, blob):
    path = tmp_path / "raw.toml"
    path.write_bytes(blob)
    try:
        load_manifest(path)
    except TrajectoryError as exc:
        assert "\n" not in str(exc)


# -- [schedule] revisions = [...] (issue 15, item 4) -----------------------------------------------------------
def test_explicit_revisions_are_the_schedule_in_step_order(tmp_path):
    m = load_manifest(write(tmp_path, BASE + "[schedule]\nrevisions = ['step143000', 'step0', 'step1000']\n"))
    assert m.schedule.revisions() == ["step0", "step1000", "step143000"]
    assert m.schedule.steps == (0, 1000, 143_000)  # not Pythia's 154 steps


@pytest.mark.parametrize(
    "schedule, needle",
    [
        ("revisons = ['step0']", "[schedule] 'revisons' must be one of"),
        ("revisions = ['step0']\nstpes = [1]", "[schedule] 'stpes' must be one of"),
        ("revisions = ['step0']\nsteps = [0, 1]", "[schedule] 'steps' must be absent when 'revisions' is given"),
        ("revisions = ['step0']\nrule = 'pythia'", "[schedule] 'rule' must be absent when 'revisions' is given"),
        ("revisions = ['step0']\nlast = 1000", "[schedule] 'last' must be absent when 'revisions' lists"),
        ("revisions = ['step0']\nrevision_format = 's{step}'", "[schedule] 'revision_format' must be absent"),
        ("revisions = []", "[schedule] 'revisions' must be a non-empty list of revision names"),
        ("revisions = ['main']", "[schedule] 'revisions' must be names that carry a step number"),
        ("revisions = ['step1', 'ckpt1']", "[schedule] 'revisions' must be names of distinct steps"),
    ],
)
def test_schedule_keys_that_are_unknown_or_mixed_with_revisions_are_refused(tmp_path, schedule, needle):
    with pytest.raises(TrajectoryError) as err:
        load_manifest(write(tmp_path, BASE + f"[schedule]\n{schedule}\n"))
    assert needle in str(err.value) and "exp.toml" in str(err.value)


def test_a_sweep_measures_exactly_the_listed_revisions(tmp_path, tiny_dir, text_file):
    """Four revisions on disk, two listed: the two are measured, nothing else is planned or stored."""
    import shutil

    import polars as pl
    from builders import run_arm

    from trajectory.store import Store

    for step in (0, 1, 2, 3):
        shutil.copytree(tiny_dir, tmp_path / "ckpts" / f"step{step}")
    path = write(
        tmp_path,
        f"""
[experiment]
arms = ["local"]
[model]
path = "{tmp_path / "ckpts"}"
[schedule]
revisions = ["step2", "step0"]
[data]
text_file = "{text_file}"
tokens = 1024
seq_len = 64
[sweep]
store = "{tmp_path / "store"}"
""",
    )
    outcomes = run_arm(load_manifest(path), "local")
    assert sorted(o.label for o in outcomes) == ["local:step0", "local:step2"]
    stored = Store(tmp_path / "store").read()
    assert sorted(set(stored["revision"])) == ["step0", "step2"] and stored.filter(pl.col("status") != "ok").is_empty()
