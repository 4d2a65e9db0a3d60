"""The verdict table: per trained arm, block and seed, the band, the events, z and the verdict.

:func:`arm_verdicts` applies the rules (:mod:`trajectory.verdicts`) to a frame of one arm's per-seed
trajectories and a band, so the same rules serve the random-init band of one experiment and a trained band
built across experiments; :func:`block_table` and :func:`verdict_table` read both from a store's frame.
"""

from __future__ import annotations

import polars as pl

from ..config import DEFAULT_BAND_COVERAGE
from .band import init_check, random_init_band
from .exits import agreed, series_events, series_verdict, z_score
from .frame import seed_trajectories, trained_arms

EVENT_STEPS = ("final_step", "first_exit_step", "peak_step", "persistent_exit_step")
TABLE_SCHEMA = {
    "block": pl.Int64,
    "seed": pl.Int64,
    "band_seeds": pl.Int64,
    "init_mean": pl.Float64,
    "init_sd": pl.Float64,
    "t_quantile": pl.Float64,
    "band_low": pl.Float64,
    "band_high": pl.Float64,
    "final_step": pl.Int64,
    "final": pl.Float64,
    "z": pl.Float64,
    "first_exit_step": pl.Int64,
    "first_exit_direction": pl.Utf8,
    "peak_step": pl.Int64,
    "peak": pl.Float64,
    "persistent_exit_step": pl.Int64,
    "persistent_direction": pl.Utf8,
    "persistent_points": pl.Int64,
    "persistent_fraction": pl.Float64,
    "persistent_holds": pl.Boolean,
    **{f"{s.removesuffix('_step')}_pythia_step": pl.Int64 for s in EVENT_STEPS},
    "seed_verdict": pl.Utf8,
    "seed_reason": pl.Utf8,
    "verdict": pl.Utf8,
    "reason": pl.Utf8,
    "warning": pl.Utf8,
}


def _pythia(series: pl.DataFrame) -> dict[int, int | None]:
    """Each measured step's Pythia-equivalent step (itself when none is stored)."""
    return {s: (p if p is not None else s) for s, p in zip(series["step"].to_list(), series["pythia_step"].to_list())}


def _seed_row(series: pl.DataFrame, band: dict, total_steps: int, warning: str | None) -> dict:
    """One (seed, block) row: band, events, z and the series' own verdict."""
    has_band = band.get("band_low") is not None
    ev = series_events(
        series["step"].to_list(), series["value"].to_list(), band.get("band_low"), band.get("band_high"), total_steps
    )
    verdict, reason = series_verdict(ev, has_band, warning)
    pythia = _pythia(series)
    row = {**band, **ev.row(), "z": z_score(ev.final, band.get("init_mean"), band.get("init_sd"))}
    for name in EVENT_STEPS:
        row[f"{name.removesuffix('_step')}_pythia_step"] = pythia.get(row[name]) if row[name] is not None else None
    return {**row, "seed_verdict": verdict, "seed_reason": reason}


def arm_verdicts(
    traj: pl.DataFrame, band: pl.DataFrame, total_steps: int | None = None, warning: str | None = None
) -> pl.DataFrame:
    """The rules on one arm: ``traj`` holds its trajectories (``seed, block, step, value`` and optionally
    ``pythia_step``), ``band`` the band per block (``block, band_low, band_high, init_mean, init_sd`` …, as
    :func:`~trajectory.verdicts.band.prediction_band` gives).  ``total_steps`` is the arm's length of training
    (default: its last measured step); ``warning`` (the init check's) makes every verdict undetermined.

    One row per (block, seed) with the band (``band_seeds``: how many draws it rests on), the events and
    ``seed_verdict``, and per block the agreed ``verdict`` and ``reason``
    (:func:`~trajectory.verdicts.exits.agreed`) repeated on each of its seeds' rows."""
    if "pythia_step" not in traj.columns:
        traj = traj.with_columns(pythia_step=pl.lit(None, pl.Int64))
    total = total_steps or (int(traj["step"].max()) if len(traj) else 1)
    bands = {
        r["block"]: {"band_seeds" if k == "n_seeds" else k: v for k, v in r.items()} for r in band.iter_rows(named=True)
    }
    rows = []
    for (block, seed), series in traj.sort("block", "seed", "step").group_by("block", "seed", maintain_order=True):
        rows.append({"block": block, "seed": seed, **_seed_row(series, bands.get(block, {}), total, warning)})
    for block in sorted(set(bands) - set(traj["block"].to_list())):  # a band without a trained value
        verdict, reason = series_verdict(None, bands[block]["band_low"] is not None)
        rows.append({**bands[block], "block": block, "seed_verdict": verdict, "seed_reason": reason})
    table = pl.DataFrame(rows, schema={k: v for k, v in TABLE_SCHEMA.items() if k not in ("verdict", "reason")})
    per_block = {}
    for (block,), g in table.group_by("block", maintain_order=True):
        seeds = {s: (v, r) for s, v, r in g.select("seed", "seed_verdict", "seed_reason").iter_rows() if s is not None}
        per_block[block] = agreed(seeds) if seeds else (g["seed_verdict"][0], g["seed_reason"][0])
    return table.with_columns(
        verdict=pl.col("block").replace_strict({b: v for b, (v, _) in per_block.items()}, return_dtype=pl.Utf8),
        reason=pl.col("block").replace_strict({b: r for b, (_, r) in per_block.items()}, return_dtype=pl.Utf8),
        warning=pl.lit(warning, pl.Utf8),
    ).sort("block", "seed", nulls_last=True)


def block_table(
    frame: pl.DataFrame,
    arm: str,
    metric: str = "r2_lin",
    coverage: float = DEFAULT_BAND_COVERAGE,
    total_steps: int | None = None,
) -> pl.DataFrame:
    """:func:`arm_verdicts` of ``arm`` in a store's frame against its random-init band, with the init check."""
    band = random_init_band(frame, metric, coverage)
    _, warning = init_check(frame, arm, metric, coverage)
    return arm_verdicts(seed_trajectories(frame, arm, metric), band, total_steps, warning)


def verdict_table(
    frame: pl.DataFrame,
    metric: str = "r2_lin",
    coverage: float = DEFAULT_BAND_COVERAGE,
    total_steps: dict[str, int] | None = None,
    arms: list[str] | None = None,
) -> pl.DataFrame:
    """:func:`block_table` of every trained arm (or ``arms``), with an ``arm`` column first."""
    parts = [
        block_table(frame, arm, metric, coverage, (total_steps or {}).get(arm)).select(
            pl.lit(arm).alias("arm"), pl.all()
        )
        for arm in (arms or trained_arms(frame, metric))
    ]
    schema = {"arm": pl.Utf8, **TABLE_SCHEMA}
    return pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=schema)


def compare_metrics(
    frame: pl.DataFrame,
    metrics: tuple[str, str] = ("r2_lin", "r2_lin_inf"),
    coverage: float = DEFAULT_BAND_COVERAGE,
    total_steps: dict[str, int] | None = None,
) -> pl.DataFrame:
    """Per trained arm and block: the verdict under each of two metrics (each against its own random-init band)
    and the mean over seeds of the final value of each, e.g. how much the finite-sample correction moves it."""
    a, b = metrics
    out = []
    for metric in metrics:
        table = verdict_table(frame, metric, coverage, total_steps)
        out.append(
            table.group_by("arm", "block").agg(
                pl.col("verdict").first().alias(f"verdict_{metric}"), pl.col("final").mean().alias(f"final_{metric}")
            )
        )
    joined = out[0].join(out[1], on=["arm", "block"], how="full", coalesce=True)
    return joined.with_columns(changed=pl.col(f"verdict_{a}").ne_missing(pl.col(f"verdict_{b}"))).sort("arm", "block")
