"""Values a manifest could hold that would only fail later (in torch, in polars, in every unit, in a path) are
refused when it is read, in one line naming the file, the section and the field."""

import pytest

from trajectory.errors import ManifestError
from trajectory.experiments import default_name
from trajectory.manifest import load_manifest

BASE = '[model]\nrepo = "EleutherAI/pythia-14m"\n'


def _refused(tmp_path, text: str, *needles: str) -> str:
    path = tmp_path / "exp.toml"
    path.write_text(BASE + text)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    message = str(err.value)
    assert "\n" not in message and "exp.toml" in message, message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize(
    "text, section, field",
    [
        ("[twin]\nbeta1 = 1.0\n", "[twin]", "beta1"),  # torch's AdamW: every unit fails, step 0 included
        ("[twin]\nbeta2 = 1.0\n", "[twin]", "beta2"),
        ("[twin]\nclip = 0\n", "[twin]", "clip"),  # a gradient clipped to norm 0: nothing is trained
        ("[twin]\nbatch_tokens = 64\nseq_len = 128\n", "[twin]", "batch_tokens"),  # would train 128, not 64
        ("[schedule]\nsteps = [0, 16]\ntokens_per_step = 9223372036854775807\n", "[schedule]", "tokens_per_step"),
        ("[metric]\ncompanions = ['ci']\nfolds = 100000\n", "[metric]", "folds"),
    ],
)
def test_a_value_that_would_fail_later_is_refused_at_load_naming_section_and_field(tmp_path, text, section, field):
    _refused(tmp_path, text, section, field)


def test_the_limits_leave_the_values_next_to_them_alone(tmp_path):
    """Just inside each limit is accepted: the refusals are the limits, not a blanket."""
    path = tmp_path / "exp.toml"
    path.write_text(
        BASE + "[schedule]\nsteps = [0, 16]\ntokens_per_step = 576460752303423487\n"  # 16 · N < 2⁶³
        "[data]\ntokens = 1280\nseq_len = 128\n[metric]\ncompanions = ['ci']\nfolds = 5\n"
        "[twin]\nbeta1 = 0.99\nbeta2 = 0.999\nclip = 0.5\nbatch_tokens = 128\nseq_len = 128\n"
    )
    m = load_manifest(path)
    assert (m.twin.beta1, m.twin.clip, m.metric.folds, m.schedule.tokens_at("step16")) == (
        0.99,
        0.5,
        5,
        16 * 576460752303423487,
    )


def test_an_experiment_name_too_long_for_a_folder_is_refused_at_load(tmp_path):
    _refused(tmp_path, "[experiment]\nname = '" + "x" * 300 + "'\n", "[experiment]", "name")


def test_multi_run_folder_names_of_two_different_sets_never_coincide():
    a, b = default_name(["p+q", "r"]), default_name(["p", "q+r"])
    assert a != b
    assert default_name(["p", "q"]) == "p+q"  # the readable form stays where it cannot be ambiguous
    assert len(default_name(["x" * 200, "y" * 200])) < 100
