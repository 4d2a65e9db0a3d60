"""The verdict rules on synthetic stores whose answers are known by construction."""

from __future__ import annotations

import math
import statistics

import polars as pl
import pytest
from synthetic import (
    BAD,
    BASE,
    DATA_HASH,
    EXPECTED_PERSISTENT,
    EXPECTED_VERDICT,
    FAILED_STEP,
    MISSING_STEP,
    N_BLOCKS,
    OFFSETS,
    SHORT_STEPS,
    TWIN_BUDGET,
    build_store,
    hub_value,
    series_store,
    write_unit,
)

from trajectory import verdicts as verdict
from trajectory.config import twin_schedule
from trajectory.store import Store

SD = statistics.stdev(OFFSETS)
T95_4 = 2.7764451  # t(0.975, 4) from a printed table: five seeds
HALF = T95_4 * SD * math.sqrt(1 + 1 / len(OFFSETS))  # the 95% prediction half-width for one new draw
HUB_STEPS = [s for s in SHORT_STEPS if s not in (MISSING_STEP, FAILED_STEP)]


@pytest.fixture(scope="module")
def frame(tmp_path_factory) -> pl.DataFrame:
    return build_store(tmp_path_factory.mktemp("store")).read()


def reference_persistent(values: dict[int, float], low: float, high: float):
    """The definition, brute force: the first step from which every later value is outside, on one side."""
    steps = sorted(values)
    for i, s in enumerate(steps):
        tail = [values[t] for t in steps[i:]]
        if all(v > high for v in tail) or all(v < low for v in tail):
            return s
    return None


def one(frame: pl.DataFrame, arm: str = "hub", total: int | None = None, block: int = 0, seed: int = 0) -> dict:
    table = verdict.block_table(frame, arm, total_steps=total)
    return table.filter((pl.col("block") == block) & (pl.col("seed") == seed)).row(0, named=True)


def test_band_is_the_t_prediction_interval_for_one_new_draw(frame):
    band = verdict.random_init_band(frame)
    assert band["block"].to_list() == list(range(N_BLOCKS))
    assert band["n_seeds"].to_list() == [len(OFFSETS)] * N_BLOCKS
    assert band["init_mean"].to_list() == pytest.approx(BASE, abs=1e-12)
    assert band["init_sd"].to_list() == pytest.approx([SD] * N_BLOCKS, rel=1e-9)
    assert (band["band_high"] - band["init_mean"]).to_list() == pytest.approx([HALF] * N_BLOCKS, rel=1e-6)
    assert (band["init_mean"] - band["band_low"]).to_list() == pytest.approx([HALF] * N_BLOCKS, rel=1e-6)
    wide = verdict.random_init_band(frame, coverage=0.99)  # t(0.995, 4) = 4.604
    assert (wide["band_high"] - wide["init_mean"])[0] == pytest.approx(4.6040949 * SD * math.sqrt(1.2), rel=1e-6)


def test_a_value_inside_the_t_band_but_beyond_two_sd_is_within_band(tmp_path):
    """Issue 13's point 1: z = 2.4 is outside mean ± 2 sd but inside the 95% band for one new draw (± 3.04 sd)."""
    z = 2.4
    store = series_store(tmp_path, {0: {s: 0.5 + (z * SD if s else 0.0) for s in (0, 100, 200, 300, 400, 500)}})
    row = one(store.read())
    assert row["z"] == pytest.approx(z)
    assert row["verdict"] == "within-band" and row["first_exit_step"] is None


def test_persistent_exits_and_verdicts_known_answers(frame):
    table = verdict.block_table(frame, "hub", total_steps=SHORT_STEPS[-1])
    got = {r["block"]: r for r in table.iter_rows(named=True)}
    for block, expected in EXPECTED_PERSISTENT.items():
        assert got[block]["persistent_exit_step"] == expected, f"block {block}"
        assert got[block]["verdict"] == EXPECTED_VERDICT[block], f"block {block}"
    assert (got[2]["first_exit_step"], got[2]["first_exit_direction"]) == (64, "above")  # left, came back
    assert (got[2]["peak_step"], got[2]["peak"]) == (64, pytest.approx(BASE[2] + 0.2))
    assert got[3]["persistent_direction"] == "below"


def test_persistent_exit_matches_the_definition_for_every_block(frame):
    table = verdict.block_table(frame, "hub")
    for row in table.iter_rows(named=True):
        b = row["block"]
        steps = [s for s in HUB_STEPS if not (b == BAD[1] and s == BAD[0])]
        values = {s: hub_value(b, s) for s in steps}
        assert row["persistent_exit_step"] == reference_persistent(values, BASE[b] - HALF, BASE[b] + HALF), b


def test_an_exit_at_the_last_point_is_not_yet(tmp_path):
    """Acceptance: inside the band until the last measured step, outside there: undetermined, "not yet"."""
    store = series_store(tmp_path, {0: {0: 0.5, 100: 0.5, 200: 0.51, 300: 0.49, 400: 0.5, 500: 0.9}})
    row = one(store.read(), total=500)
    assert (row["first_exit_step"], row["first_exit_direction"]) == (500, "above")
    assert row["persistent_exit_step"] == 500 and row["persistent_points"] == 1 and not row["persistent_holds"]
    assert row["verdict"] == "undetermined" and "not yet" in row["reason"]


def test_three_points_but_under_ten_percent_of_training_is_not_yet_and_enough_is_learned(tmp_path):
    points = {0: 0.5, 100: 0.5, 9000: 0.5, 9400: 0.9, 9700: 0.9, 9990: 0.9}
    store = series_store(tmp_path, {0: points})
    row = one(store.read(), total=10_000)  # 3 points spanning 5.9% of training
    assert row["persistent_points"] == 3 and row["persistent_fraction"] == pytest.approx(0.059)
    assert row["verdict"] == "undetermined" and "not yet" in row["reason"]
    row = one(store.read(), total=5_000)  # the same points span 11.8% of a shorter run
    assert row["verdict"] == "learned-above" and row["persistent_exit_step"] == 9400


def test_a_rise_above_then_a_persistent_fall_below_gives_both_events(tmp_path):
    """Acceptance: first exit above (with its peak), then below the band from a later step through the end."""
    points = {0: 0.5, 1: 0.6, 2: 0.8, 4: 0.7, 8: 0.5, 16: 0.45, 32: 0.3, 64: 0.3, 128: 0.25, 256: 0.2}
    store = series_store(tmp_path, {0: points})
    row = one(store.read(), total=256)
    assert (row["first_exit_step"], row["first_exit_direction"]) == (1, "above")
    assert (row["peak_step"], row["peak"]) == (2, 0.8)
    assert (row["persistent_exit_step"], row["persistent_direction"], row["persistent_points"]) == (16, "below", 5)
    assert row["persistent_holds"] and row["verdict"] == "learned-below"


def test_an_arm_whose_step_0_is_outside_its_band_is_undetermined_with_a_warning(tmp_path):
    """Acceptance: step 0 at 0.98 against a band around 0.5 (another init); later values far above the band."""
    store = series_store(tmp_path, {0: {0: 0.98, 100: 0.97, 200: 0.97, 300: 0.96, 400: 0.96, 500: 0.96}})
    row = one(store.read(), total=500)
    assert row["persistent_holds"]  # the numbers alone would say learned-above …
    assert row["verdict"] == "undetermined"  # … but the band describes another init
    assert "step 0 of hub lies outside its random-init band" in row["warning"]
    assert "step 0" in row["reason"]
    checked, warning = verdict.init_check(store.read(), "hub")
    assert checked["outside"].to_list() == [True] and warning == row["warning"]


def test_outside_from_step_0_on_is_not_called_learned(tmp_path):
    """Step 0 just beyond the 95% band in two seeds (the init check, widened to 97.5% for their two step-0 values,
    t(0.9875, 4) = 3.75 > 1.2 · 2.78, lets it pass) and every later value too: the value was there before
    training, so the band cannot call it learned."""
    edge = 0.5 + 1.2 * HALF
    series = {s: edge for s in (0, 100, 200, 300, 400, 500)}
    store = series_store(tmp_path, {0: series, 1: dict(series)})
    row = one(store.read(), total=500)
    assert row["warning"] is None and row["persistent_exit_step"] == 0 and row["persistent_holds"]
    assert row["verdict"] == "undetermined" and "from step 0 on" in row["reason"]


def test_outside_from_the_first_measured_step_on_without_a_step_0_is_not_called_learned(tmp_path):
    """An arm with no step 0 (OLMo-1B's branches start at step 1000) has no init check, and a value outside the
    band at every measured step never shows a point inside: the band cannot tell learned from initial."""
    series = {s: 0.9 for s in (1000, 2000, 3000, 4000, 5000)}
    row = one(series_store(tmp_path / "a", {0: series}).read(), total=5000)
    assert row["warning"] is None and row["persistent_exit_step"] == 1000 and row["persistent_holds"]
    assert row["verdict"] == "undetermined" and "first measured step (1000) on" in row["reason"]
    inside_first = {1000: 0.5, **{s: 0.9 for s in (2000, 3000, 4000, 5000)}}  # inside once, then outside for good
    row = one(series_store(tmp_path / "b", {0: inside_first}).read(), total=5000)
    assert row["verdict"] == "learned-above"


def test_the_init_check_widens_the_band_for_many_blocks(tmp_path):
    """12 step-0 values are 12 chances of a false alarm: the check holds each to the band widened to coverage
    1 − 0.05/12 (t(0.99792, 4) lies between the printed t(0.9975, 4) = 5.598 and t(0.999, 4) = 7.173)."""
    blocks = 12

    def check(edge: float, root) -> str | None:
        store = Store(root)
        for seed, off in enumerate(OFFSETS):
            write_unit(store, "random-init", seed, 0, [0.5 + off] * blocks)
        write_unit(store, "hub", 0, 0, [edge] + [0.5] * (blocks - 1))
        write_unit(store, "hub", 0, 100, [0.9] * blocks)
        checked, warning = verdict.init_check(store.read(), "hub")
        assert len(checked) == blocks
        return warning

    scale = SD * math.sqrt(1.2)
    assert check(0.5 + 5.5 * scale, tmp_path / "a") is None  # outside the 95% band (2.78), inside the widened one
    assert "in 1 of 12 blocks (block 0:" in check(0.5 + 7.3 * scale, tmp_path / "b")


def test_several_seeds_must_agree(tmp_path):
    up = {0: 0.5, 100: 0.9, 200: 0.9, 300: 0.9}
    store = series_store(tmp_path, {0: up, 1: dict(up), 2: {0: 0.5, 100: 0.9, 200: 0.5, 300: 0.5}})
    table = verdict.block_table(store.read(), "hub", total_steps=300)
    assert table["seed"].to_list() == [0, 1, 2]
    assert table["seed_verdict"].to_list() == ["learned-above", "learned-above", "within-band"]
    assert set(table["verdict"]) == {"undetermined"}
    expected = "the seeds' verdicts differ: seed 0 learned-above, seed 1 learned-above, seed 2 within-band"
    assert table["reason"][0] == expected
    agree = series_store(tmp_path / "agree", {0: up, 1: dict(up)})
    table = verdict.block_table(agree.read(), "hub", total_steps=300)
    assert set(table["verdict"]) == {"learned-above"} and table["reason"][0].startswith("all 2 seeds")


def test_the_rules_apply_to_any_band_and_series():
    """:func:`arm_verdicts` is the rule on a frame of per-seed trajectories and a band, e.g. a trained band."""
    traj = pl.DataFrame({"seed": [3] * 4, "block": [7] * 4, "step": [0, 10, 20, 30], "value": [0.1, 0.2, 0.9, 0.9]})
    band = pl.DataFrame({"block": [7], "band_low": [0.0], "band_high": [0.5], "init_mean": [0.25], "init_sd": [0.1]})
    row = verdict.arm_verdicts(traj, band, total_steps=30).row(0, named=True)
    assert (row["seed"], row["first_exit_step"], row["persistent_points"]) == (3, 20, 2)
    assert row["verdict"] == "undetermined"  # 2 points: not yet
    assert row["z"] == pytest.approx((0.9 - 0.25) / 0.1)


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


def test_a_gap_neither_breaks_nor_makes_a_persistent_exit(tmp_path):
    """Outside from step 4 on, except a non-ok row inside the band at step 8: that row is a gap."""
    store = series_store(tmp_path, {})
    for step in (0, 1, 2, 4, 8, 16, 32):
        bad = {0: "nan"} if step == 8 else None
        write_unit(store, "hub", 0, step, [0.5 if step in (0, 1, 2, 8) else 0.9], bad)
    assert one(store.read())["persistent_exit_step"] == 4
    write_unit(store, "hub", 0, 64, [0.5])  # comes back at the last step: no persistent exit
    row = one(store.read())
    assert row["persistent_exit_step"] is None and row["verdict"] == "within-band"


def test_one_seed_leaves_band_z_and_verdict_undefined(tmp_path):
    frame = build_store(tmp_path, seeds=[0], twin=False, steps=[0, 64, 128]).read()
    table = verdict.block_table(frame, "hub")
    assert table["init_sd"].is_null().all() and table["band_low"].is_null().all()
    assert table["z"].is_null().all()
    assert table["persistent_exit_step"].is_null().all()
    assert set(table["verdict"]) == {"undetermined"} and "no random-init band" in table["reason"][0]


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


def test_spread_across_blocks_is_one_trained_model_s_as_at_init(tmp_path):
    """Two twin seeds whose blocks swap places: each seed spreads sd([0.5, 0.7]) across its blocks, their mean
    not at all.  One trained model is set beside one untrained model, so the spread is each seed's, averaged."""
    store = Store(tmp_path)
    for seed, off in enumerate(OFFSETS):
        write_unit(store, "random-init", seed, 0, [0.5 + off, 0.6 + off])
    write_unit(store, "twin", 0, 100, [0.5, 0.7], pythia_step=100)
    write_unit(store, "twin", 1, 100, [0.7, 0.5], pythia_step=100)
    row = verdict.spread_by_step(store.read(), "twin").row(0, named=True)
    assert row["spread"] == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert row["init_spread"] == pytest.approx(statistics.stdev([0.5, 0.6])) and row["n_blocks"] == 2


def test_twin_events_report_their_pythia_step(frame):
    table = verdict.block_table(frame, "twin").drop_nulls("persistent_exit_step")
    pairs = dict(twin_schedule(SHORT_STEPS, TWIN_BUDGET))
    assert len(table) > 0
    assert table["persistent_exit_pythia_step"].to_list() == [pairs[s] for s in table["persistent_exit_step"]]
    assert table["first_exit_pythia_step"].to_list() == [pairs[s] for s in table["first_exit_step"]]


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
