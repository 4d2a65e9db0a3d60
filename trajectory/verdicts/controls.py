"""The verdict against the controls: is a block's departure from random init learned from the data, or what
the optimiser does to this architecture anyway?

A *control* is a twin arm that keeps the optimiser and removes what there is to learn: a variant trained on
``random`` or ``shuffled:SOURCE`` tokens (:mod:`trajectory.data.traindata`), or the perturbation null
``twin:perturbation`` (:mod:`trajectory.arms.perturb`).  For a control ``C``, a metric and a block:

1. **Control band** at each matched step (steps are matched by ``pythia_step``, the fraction of training):
   the prediction interval for one new draw over ``C``'s seeds there — the perturbation null's K draws count
   as its seeds — ``mean ± t(1 − α/2, S − 1) · sd · √(1 + 1/S)`` (:func:`~trajectory.verdicts.band.prediction_band`).
   With S = 2 the t quantile has 1 degree of freedom: t(0.975, 1) = 12.71, a half-width of 15.6 sd.  The
   band is honest about how little two seeds say; it is not a defect to be tuned away.
2. **Events** of each data-twin seed's series over the matched steps, each point against its own step's band,
   with the persistence rule of the random-init verdict (≥ 3 measured points, ≥ 10% of training;
   :func:`~trajectory.verdicts.exits.series_events`).
3. **Verdict of a seed**:
   ``learned-from-data`` when the persistent exit from the control band holds and does not start at the first
   matched step; ``like-control`` when the last matched value is inside the control band, unless that band
   cannot tell the seed from an untrained draw (it overlaps the random-init band while the value lies outside
   the random-init band: then ``undetermined``); ``undetermined`` otherwise (fewer than 2 control seeds at a
   matched step, the exit not persistent yet, or outside from the first matched step on: the control starts
   elsewhere).
4. **Verdict of a block**: the seeds' when they all agree, else ``undetermined``
   (:func:`~trajectory.verdicts.exits.agreed`).

So a block inside the control band is never called learned from data, whatever the random-init verdict says.
"""

from __future__ import annotations

import polars as pl

from ..config import DEFAULT_BAND_COVERAGE, PERTURBATION, is_twin, variant_arm
from ..data.traindata import seeded
from .band import prediction_band, random_init_band
from .exits import agreed, series_events
from .frame import seed_trajectories

CONTROL_VERDICTS = ("learned-from-data", "like-control", "undetermined")
PERTURB_ARM = variant_arm(PERTURBATION)
CONTROL_RULE = (
    "Against a control: its band at each matched step is the prediction interval for one new draw over the "
    "control's seeds there (the perturbation null's K draws are its seeds); each data-twin seed is "
    "learned-from-data when it leaves that band persistently (the persistence rule above) after the first matched "
    "step, like-control when its last matched value is inside the band and that band does not also cover the "
    "random-init band while the value lies outside it, and undetermined otherwise. A block's verdict is its seeds' "
    "when they all agree, else undetermined."
)


def control_arms(manifest=None, frame: pl.DataFrame | None = None) -> list[str]:
    """The controls: the manifest's variants on ``random`` / ``shuffled:`` tokens and its perturbation null;
    without a manifest, every twin arm of ``frame`` but the plain twin and the regularised ones cannot be told
    apart, so every ``twin:NAME`` arm present is taken."""
    if manifest is None:
        return sorted({a for a in frame["arm"].unique().to_list() if is_twin(a) and a != "twin"})
    arms = [arm for arm, spec in manifest.twin_specs().items() if seeded(spec.train_data)]
    return arms + ([PERTURB_ARM] if manifest.perturbation is not None else [])


def _matched(frame: pl.DataFrame, arm: str, metric: str) -> pl.DataFrame:
    t = seed_trajectories(frame, arm, metric)
    return t.with_columns(x=pl.col("pythia_step").fill_null(pl.col("step")))


def control_band(frame: pl.DataFrame, arm: str, metric: str = "r2_lin", coverage: float = DEFAULT_BAND_COVERAGE):
    """Per (block, matched step ``x``): the prediction band over ``arm``'s seeds (module docstring, rule 1)."""
    values = _matched(frame, arm, metric).select("block", "x", "seed", "value")
    return prediction_band(values, coverage, by=("block", "x"))


def _seed_verdict(ev, lows, highs, init: dict) -> tuple[str, str]:
    if ev is None or lows[-1] is None:
        return "undetermined", "no control band at the last matched step (fewer than 2 control seeds there)"
    if ev.persistent_holds and ev.persistent_exit_step == ev.first_step:
        return "undetermined", (
            f"{ev.persistent_direction} the control band from the first matched step ({ev.first_step}) on: the "
            "control starts elsewhere, so it does not show what the data added"
        )
    if ev.persistent_holds:
        return "learned-from-data", (
            f"{ev.persistent_direction} the control band from step {ev.persistent_exit_step} through step "
            f"{ev.final_step} ({ev.persistent_points} matched points, {ev.persistent_fraction:.0%} of training)"
        )
    if ev.persistent_exit_step is not None:
        return "undetermined", (
            f"{ev.persistent_direction} the control band since step {ev.persistent_exit_step} "
            f"({ev.persistent_points} matched points): not persistent yet"
        )
    lo, hi = init.get("band_low"), init.get("band_high")
    if lo is not None and lows[-1] <= hi and highs[-1] >= lo and not lo <= ev.final <= hi:
        return "undetermined", (
            f"inside the control band {lows[-1]:.4f}–{highs[-1]:.4f} at step {ev.final_step}, but that band also "
            f"overlaps the random-init band {lo:.4f}–{hi:.4f}: too wide to tell the value from an untrained draw"
        )
    return "like-control", f"the last matched value (step {ev.final_step}) is inside the control band"


CONTROL_SCHEMA = {
    "control": pl.Utf8,
    "block": pl.Int64,
    "seed": pl.Int64,
    "control_seeds": pl.Int64,
    "t_quantile": pl.Float64,
    "control_mean": pl.Float64,
    "control_low": pl.Float64,
    "control_high": pl.Float64,
    "matched_points": pl.Int64,
    "final_step": pl.Int64,
    "final": pl.Float64,
    "first_exit_step": pl.Int64,
    "persistent_exit_step": pl.Int64,
    "persistent_direction": pl.Utf8,
    "persistent_points": pl.Int64,
    "persistent_holds": pl.Boolean,
    "seed_verdict": pl.Utf8,
    "seed_reason": pl.Utf8,
    "verdict": pl.Utf8,
    "reason": pl.Utf8,
}


def _series_row(series: pl.DataFrame, total: int, init: dict) -> dict:
    """One data-twin seed of one block against the control band at its matched steps (rules 2 and 3)."""
    series = series.drop_nulls("band_low").sort("step")
    if series.is_empty():
        return {
            "matched_points": 0,
            **dict(zip(("seed_verdict", "seed_reason"), _seed_verdict(None, [None], [], init))),
        }
    lows, highs = series["band_low"].to_list(), series["band_high"].to_list()
    ev = series_events(series["step"].to_list(), series["value"].to_list(), lows, highs, total)
    verdict, reason = _seed_verdict(ev, lows, highs, init)
    last = series.row(-1, named=True)
    keep = ("final_step", "final", "first_exit_step", "persistent_exit_step", "persistent_direction")
    return {
        **{k: v for k, v in ev.row().items() if k in keep or k in ("persistent_points", "persistent_holds")},
        "control_seeds": last["n_seeds"], "t_quantile": last["t_quantile"], "control_mean": last["init_mean"],
        "control_low": last["band_low"], "control_high": last["band_high"], "matched_points": series.height,
        "seed_verdict": verdict, "seed_reason": reason,
    }  # fmt: skip


def control_table(
    frame: pl.DataFrame,
    control: str,
    metric: str = "r2_lin",
    coverage: float = DEFAULT_BAND_COVERAGE,
    total_steps: int | None = None,
    data_arm: str = "twin",
) -> pl.DataFrame:
    """One row per (block, data-twin seed): the control band at the last matched step, the events against the
    per-step band, the seed's verdict and the block's agreed ``verdict`` and ``reason`` (module docstring)."""
    band = control_band(frame, control, metric, coverage)
    data = _matched(frame, data_arm, metric).join(band, on=["block", "x"], how="left")
    init = {r["block"]: r for r in random_init_band(frame, metric, coverage).iter_rows(named=True)}
    total = total_steps or (int(data["step"].max()) if data.height else 1)
    rows = []
    for (block, seed), series in data.group_by("block", "seed", maintain_order=True):
        rows.append(
            {"control": control, "block": block, "seed": seed, **_series_row(series, total, init.get(block, {}))}
        )
    table = pl.DataFrame(rows, schema={k: v for k, v in CONTROL_SCHEMA.items() if k not in ("verdict", "reason")})
    per_block = {
        b: agreed({s: (v, r) for s, v, r in g.select("seed", "seed_verdict", "seed_reason").iter_rows()})
        for (b,), g in table.group_by("block", maintain_order=True)
    }
    return table.with_columns(
        verdict=pl.col("block").replace_strict({b: v for b, (v, _) in per_block.items()}, return_dtype=pl.Utf8),
        reason=pl.col("block").replace_strict({b: r for b, (_, r) in per_block.items()}, return_dtype=pl.Utf8),
    ).sort("block", "seed")


def controls_table(
    frame: pl.DataFrame,
    controls: list[str],
    metric: str = "r2_lin",
    coverage: float = DEFAULT_BAND_COVERAGE,
    total_steps: dict[str, int] | None = None,
) -> pl.DataFrame:
    """:func:`control_table` of every control present in ``frame``, stacked (column ``control``)."""
    present = set(frame["arm"].unique().to_list())
    parts = [
        control_table(frame, c, metric, coverage, (total_steps or {}).get("twin"))
        for c in controls
        if c in present and "twin" in present
    ]
    return pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=CONTROL_SCHEMA)
