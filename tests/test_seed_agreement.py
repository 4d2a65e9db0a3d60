"""The seeds of one arm agree or not about a block's final value by one rule: the multi-run F rule
(trajectory.verdicts.seeds; issue 22, point 6)."""

from __future__ import annotations

import statistics

import pytest
from synthetic import OFFSETS, series_store, write_manifest

from trajectory.manifest import load_manifest
from trajectory.report import read_experiment, sections, to_markdown
from trajectory.verdicts.seeds import seed_agreement

S0 = statistics.stdev(OFFSETS)  # the random-init draws' sd in series_store


def _store(tmp_path, finals: tuple[float, float], last: int = 2000):
    series = {seed: {0: 0.5 + OFFSETS[seed] / 2, 500: 0.9, last: v} for seed, v in enumerate(finals)}
    return series_store(tmp_path / "store", series, arm="twin")


@pytest.mark.parametrize(
    "gap, expected",
    [
        (12 * S0, "disagree"),  # the seeds end far further apart than untrained draws lie (block 3: 11.8×)
        (S0 / 1000, "agree"),  # far closer together
        (S0 * 2**0.5, "undetermined"),  # as far apart as two untrained draws typically lie
    ],
)
def test_the_seeds_final_values_follow_the_f_rule(tmp_path, gap, expected):
    store = _store(tmp_path, (0.7, 0.7 + gap))
    (row,) = seed_agreement(store.read(), "twin").iter_rows(named=True)
    assert row["agreement"] == expected, row["reason"]
    assert row["seeds_sd"] == pytest.approx(gap / 2**0.5, rel=1e-9)
    assert row["init_sd"] == pytest.approx(S0, rel=1e-9) and row["step"] == 2000


def test_only_the_last_step_every_seed_measured_counts(tmp_path):
    """Seed 1 lacks step 2000: the finals compared are both seeds' values at step 500."""
    store = series_store(
        tmp_path / "store", {0: {0: 0.5, 500: 0.9, 2000: 0.1}, 1: {0: 0.5, 500: 0.9 + S0 / 1000}}, arm="twin"
    )
    (row,) = seed_agreement(store.read(), "twin").iter_rows(named=True)
    assert row["step"] == 500 and row["agreement"] == "agree"


def test_the_report_says_what_the_rule_says_and_nothing_else_about_seeds(tmp_path):
    _store(tmp_path, (0.738, 0.738 + 12 * S0))
    manifest = load_manifest(
        write_manifest(tmp_path / "m.toml", tmp_path / "store", arms=("twin", "random-init"), blocks=1)
    )
    frame, ignored, failures = read_experiment(manifest)
    md = to_markdown("t", sections(frame, manifest, [], failures, ignored))
    assert "the seeds agree in 0, disagree in 1 and are undetermined in 0 of 1 blocks" in md
    assert "Rule for the seeds' final values" in md
    assert "seeds agree on" not in md and "seeds disagree:" not in md  # no verdict-based wording passes as agreement
