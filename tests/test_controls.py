"""The verdict against the controls on synthetic frames with known answers (trajectory.verdicts.controls)."""

from __future__ import annotations

import polars as pl
import pytest

from trajectory.verdicts.controls import control_table
from trajectory.verdicts.effects import difference

STEPS = list(range(0, 101, 10))
INIT_OFFSETS = [-0.01, -0.005, 0.0, 0.005, 0.01]  # random-init band ≈ 0.5 ± 0.025


def control_value(block: int, step: int, seed: int) -> float:
    spread = 0.2 if block == 2 else 0.004  # block 2: a control so spread its band covers the random-init band
    return 0.5 + 0.3 * step / 100 + spread * (seed - 1)


def twin_value(block: int, step: int, seed: int) -> float:
    if block == 1:  # learns something the controls do not: far below them from step 20 on
        return 0.5 + 0.05 * step / 100 + 0.001 * seed
    return control_value(0, step, 1) + 0.001 * seed  # blocks 0 and 2: the controls' path (their mean)


def _rows(arm: str, seeds, value) -> list[dict]:
    return [
        {"arm": arm, "seed": s, "step": t, "pythia_step": t, "block": b, "r2_lin": value(b, t, s), "status": "ok",
         "tokens_seen": t}
        for s in seeds for t in STEPS for b in range(3)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    init = [
        {"arm": "random-init", "seed": s, "step": 0, "pythia_step": None, "block": b, "r2_lin": 0.5 + o, "status": "ok",
         "tokens_seen": 0}
        for s, o in enumerate(INIT_OFFSETS) for b in range(3)
    ]  # fmt: skip
    rows = init + _rows("twin", (0, 1), twin_value) + _rows("twin:random", (0, 1, 2), control_value)
    return pl.DataFrame(rows)


def _verdicts(frame) -> dict[int, str]:
    table = control_table(frame, "twin:random", total_steps=100)
    return dict(table.group_by("block").agg(pl.col("verdict").first()).iter_rows())


def test_inside_the_control_band_is_like_control_though_outside_the_random_init_band(frame):
    from trajectory.verdicts import block_table

    assert block_table(frame, "twin", total_steps=100).filter(pl.col("block") == 0)["verdict"][0] == "learned-above"
    assert _verdicts(frame)[0] == "like-control"  # never "learned from data"


def test_persistently_outside_the_control_band_is_learned_from_data(frame):
    table = control_table(frame, "twin:random", total_steps=100).filter(pl.col("block") == 1)
    assert set(table["verdict"]) == {"learned-from-data"}
    # step 10: control band low 0.53 − t(0.975, 2) · 0.004 · √(4/3) = 0.5101 > the twin's 0.505, 0.506
    assert set(table["persistent_exit_step"]) == {10} and set(table["persistent_direction"]) == {"below"}


def test_a_control_band_too_wide_to_tell_from_init_decides_nothing(frame):
    assert _verdicts(frame)[2] == "undetermined"


def test_two_control_seeds_give_a_band_on_one_degree_of_freedom(frame):
    two = frame.filter(~((pl.col("arm") == "twin:random") & (pl.col("seed") == 2)))
    table = control_table(two, "twin:random", total_steps=100)
    assert set(table["control_seeds"]) == {2} and table["t_quantile"][0] == pytest.approx(12.706, abs=1e-3)


def test_the_effect_interval_is_the_pooled_two_sample_t_interval():
    delta, low, high = difference([1.0, 3.0], [0.0, 2.0, 4.0])  # Δ = 0, s_p² = (2 + 8) / 3
    half = 3.182446 * (10 / 3) ** 0.5 * (1 / 2 + 1 / 3) ** 0.5  # t(0.975, 3)
    assert (
        delta == pytest.approx(0.0) and low == pytest.approx(-half, rel=1e-5) and high == pytest.approx(half, rel=1e-5)
    )
