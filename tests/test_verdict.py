"""The verdict statistics on synthetic stores whose answers are known by construction."""

from __future__ import annotations

import statistics

import polars as pl
import pytest
from synthetic import (
    BAD,
    BASE,
    DATA_HASH,
    EXPECTED_EMERGENCE,
    FAILED_STEP,
    MISSING_STEP,
    N_BLOCKS,
    OFFSETS,
    SHORT_STEPS,
    TWIN_BUDGET,
    build_store,
    hub_value,
    write_unit,
)

from trajectory import verdicts as verdict
from trajectory.config import twin_schedule
from trajectory.store import Store

SD = statistics.stdev(OFFSETS)
HUB_STEPS = [s for s in SHORT_STEPS if s not in (MISSING_STEP, FAILED_STEP)]


@pytest.fixture(scope="module")
def frame(tmp_path_factory) -> pl.DataFrame:
    return build_store(tmp_path_factory.mktemp("store")).read()


def reference_emergence(values: dict[int, float], low: float, high: float):
    """The definition, brute force: the first step from which every later measured value is outside."""
    steps = sorted(values)
    for i, s in enumerate(steps):
        if all(not low <= values[t] <= high for t in steps[i:]):
            return s
    return None


def test_band_is_mean_and_sample_sd_over_seeds(frame):
    band = verdict.random_init_band(frame)
    assert band["block"].to_list() == list(range(N_BLOCKS))
    assert band["n_seeds"].to_list() == [len(OFFSETS)] * N_BLOCKS
    assert band["init_mean"].to_list() == pytest.approx(BASE, abs=1e-12)
    assert band["init_sd"].to_list() == pytest.approx([SD] * N_BLOCKS, rel=1e-9)
    assert (band["band_high"] - band["band_low"]).to_list() == pytest.approx([4 * SD] * N_BLOCKS, rel=1e-9)


def test_emergence_known_answers(frame):
    table = verdict.block_table(frame, "hub")
    got = dict(zip(table["block"].to_list(), table["emergence_step"].to_list()))
    for block, expected in EXPECTED_EMERGENCE.items():
        assert got[block] == expected, f"block {block}"


def test_emergence_matches_the_definition_for_every_block(frame):
    table = verdict.block_table(frame, "hub")
    for row in table.iter_rows(named=True):
        b = row["block"]
        steps = [s for s in HUB_STEPS if not (b == BAD[1] and s == BAD[0])]
        values = {s: hub_value(b, s) for s in steps}
        assert row["emergence_step"] == reference_emergence(values, BASE[b] - 2 * SD, BASE[b] + 2 * SD), b


def test_final_value_and_z(frame):
    table = verdict.block_table(frame, "hub").sort("block")
    last = HUB_STEPS[-1]
    assert table["final_step"].to_list() == [last] * N_BLOCKS
    assert table["final"].to_list() == pytest.approx([hub_value(b, last) for b in range(N_BLOCKS)])
    assert table["z"][1] == pytest.approx(0.2 / SD)
    assert table["z"][3] == pytest.approx(-0.25 / SD)


def test_non_ok_rows_and_missing_steps_are_gaps(frame):
    traj = verdict.trajectory(frame, "hub")
    assert traj.filter((pl.col("block") == BAD[1]) & (pl.col("step") == BAD[0])).is_empty()
    assert MISSING_STEP not in traj["step"].to_list()
    assert sorted(set(traj["step"].to_list())) == HUB_STEPS


def test_a_gap_neither_breaks_nor_makes_an_emergence(tmp_path):
    """Outside from step 4 on, except a non-ok row inside the band at step 8: that row is a gap."""
    store = Store(tmp_path)
    for seed, off in enumerate(OFFSETS):
        write_unit(store, "random-init", seed, 0, [0.5 + off])
    for step in (0, 1, 2, 4, 8, 16):
        bad = {0: "nan"} if step == 8 else None
        write_unit(store, "hub", 0, step, [0.5 if step in (0, 1, 2, 8) else 0.9], bad)
    table = verdict.block_table(store.read(), "hub")
    assert table["emergence_step"].to_list() == [4]
    write_unit(store, "hub", 0, 32, [0.5])  # comes back at the last step: no emergence
    assert verdict.block_table(store.read(), "hub")["emergence_step"].to_list() == [None]


def test_one_seed_leaves_band_z_and_emergence_undefined(tmp_path):
    frame = build_store(tmp_path, seeds=[0], twin=False, steps=[0, 64, 128]).read()
    table = verdict.block_table(frame, "hub")
    assert table["init_sd"].is_null().all()
    assert table["z"].is_null().all()
    assert table["emergence_step"].is_null().all()


def test_spread_across_blocks(frame):
    spread = verdict.spread_by_step(frame, "hub")
    row0 = spread.filter(pl.col("step") == 0).row(0, named=True)
    assert row0["spread"] == pytest.approx(statistics.stdev(BASE))
    assert row0["init_spread"] == pytest.approx(statistics.stdev(BASE))  # every seed shifts all blocks alike
    assert row0["ratio"] == pytest.approx(1.0)
    last = spread.filter(pl.col("step") == HUB_STEPS[-1]).row(0, named=True)
    assert last["spread"] == pytest.approx(statistics.stdev([hub_value(b, HUB_STEPS[-1]) for b in range(N_BLOCKS)]))
    assert spread.filter(pl.col("step") == BAD[0])["n_blocks"].to_list() == [N_BLOCKS - 1]
    assert MISSING_STEP not in spread["step"].to_list()


def test_twin_emergence_reports_its_pythia_step(frame):
    table = verdict.block_table(frame, "twin").drop_nulls("emergence_step")
    pairs = dict(twin_schedule(SHORT_STEPS, TWIN_BUDGET))
    assert len(table) > 0
    assert table["emergence_pythia_step"].to_list() == [pairs[s] for s in table["emergence_step"].to_list()]


def test_one_evaluation_sets_other_data_aside(tmp_path):
    store = build_store(tmp_path, twin=False, steps=[0, 1])
    write_unit(store, "hub", 0, 2, [0.1] * N_BLOCKS, data_hash="0therd4t4")
    frame = store.read()
    kept, ignored = verdict.one_evaluation(frame)
    assert set(kept["data_hash"].to_list()) == {DATA_HASH}
    assert ignored.rows() == [("0therd4t4", ignored["metric_config"][0], N_BLOCKS)]
    chosen, _ = verdict.one_evaluation(frame, "0therd4t4")
    assert chosen["step"].to_list() == [2] * N_BLOCKS


def test_unknown_metric_is_named(frame):
    with pytest.raises(ValueError, match="no_such_metric"):
        verdict.usable(frame, "no_such_metric")
