"""The verdict in numbers: is each block's linearity learned, or already there at initialisation?

Pure functions on the store's frame (``trajectory.store.ROW_SCHEMA``); nothing is
recomputed from models.  Only rows with ``status == "ok"`` and a finite metric
value count (:func:`usable`); anything else is a gap, and gaps are never
interpolated: every statistic below uses the measured steps only.

For a metric ``m`` (default ``r2_lin``) and block ``b``:

* **random-init band** — over the random-init seeds ``s = 1..S`` (arm
  ``random-init``, step 0): ``mean_b = (1/S) Σ_s m_bs`` and the sample standard
  deviation ``sd_b = sqrt(Σ_s (m_bs − mean_b)² / (S − 1))``; the band is
  ``[mean_b − 2 sd_b, mean_b + 2 sd_b]``.  With fewer than two seeds ``sd_b`` is
  undefined (null), and so are the band, ``z`` and the emergence step.
* **trajectory** — a trained arm's value ``m_b(t)`` at each measured step ``t``
  (the mean over seeds when an arm has several rows for one step).
* **final value and z** — ``t_f`` is the last measured step of block ``b``;
  ``z_b = (m_b(t_f) − mean_b) / sd_b``.
* **emergence step** — the first measured step ``t*`` such that ``m_b(t)`` lies
  strictly outside the band for *every* measured ``t ≥ t*`` up to ``t_f``;
  null when ``m_b(t_f)`` is inside the band (the value came back, or never left).
* **spread across blocks** — at each step, the sample sd over blocks of
  ``m_b(t)``, next to the spread at initialisation: for each random-init seed
  the sd over blocks of ``m_bs``, averaged over seeds (``init_spread``, with its
  sd over seeds), so one trained model is compared with one untrained model.
"""

from __future__ import annotations

import polars as pl

from .config import TRAINED_ARMS as _TRAINED
from .config import Arm

TRAINED_ARMS = tuple(str(a) for a in _TRAINED)
BAND_ARM = str(Arm.RANDOM_INIT)
BAND_WIDTH = 2.0


def usable(frame: pl.DataFrame, metric: str = "r2_lin") -> pl.DataFrame:
    """Rows that count: ``status == "ok"`` and a finite ``metric``."""
    if metric not in frame.columns:
        raise ValueError(f"metric {metric!r} is not a column of the store (columns: {frame.columns})")
    value = pl.col(metric).cast(pl.Float64)
    return frame.filter((pl.col("status") == "ok") & value.is_not_null() & value.is_finite())


def one_evaluation(frame: pl.DataFrame, data_hash: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows of one evaluation (``data_hash``, ``metric_config``) and a summary of the rows set aside.

    A store can hold units measured on other evaluation data or another metric
    config (an edited manifest); their numbers are not comparable.  Without
    ``data_hash`` the evaluation with the most rows is kept.
    """
    combos = (
        frame.group_by("data_hash", "metric_config")
        .agg(pl.len().alias("rows"))
        .sort(["rows", "data_hash", "metric_config"], descending=[True, False, False], nulls_last=True)
    )
    if data_hash is not None:
        combos = combos.sort(pl.col("data_hash") != data_hash)
    if combos.is_empty():
        return frame, combos
    keep = combos.row(0, named=True)
    mask = (pl.col("data_hash").eq_missing(keep["data_hash"])) & (
        pl.col("metric_config").eq_missing(keep["metric_config"])
    )
    return frame.filter(mask), combos.slice(1)


def random_init_band(frame: pl.DataFrame, metric: str = "r2_lin", width: float = BAND_WIDTH) -> pl.DataFrame:
    """Per block: ``n_seeds, init_mean, init_sd, band_low, band_high`` over the random-init seeds."""
    rows = usable(frame.filter(pl.col("arm") == BAND_ARM), metric)
    return (
        rows.group_by("block")
        .agg(
            pl.col("seed").n_unique().alias("n_seeds"),
            pl.col(metric).cast(pl.Float64).mean().alias("init_mean"),
            pl.col(metric).cast(pl.Float64).std(ddof=1).alias("init_sd"),
        )
        .with_columns(
            band_low=pl.col("init_mean") - width * pl.col("init_sd"),
            band_high=pl.col("init_mean") + width * pl.col("init_sd"),
        )
        .sort("block")
    )


def trained_arms(frame: pl.DataFrame, metric: str = "r2_lin") -> list[str]:
    """The trained arms with usable rows, in the order hub, local, twin."""
    present = set(usable(frame, metric)["arm"].unique().to_list())
    return [a for a in TRAINED_ARMS if a in present]


def trajectory(frame: pl.DataFrame, arm: str, metric: str = "r2_lin") -> pl.DataFrame:
    """One arm's measured ``value`` per (block, step), with ``pythia_step`` and ``tokens_seen``; mean over seeds."""
    rows = usable(frame.filter(pl.col("arm") == arm), metric)
    return (
        rows.group_by("block", "step")
        .agg(
            pl.col(metric).cast(pl.Float64).mean().alias("value"),
            pl.col("pythia_step").first(),
            pl.col("tokens_seen").first(),
            pl.len().alias("n_rows"),
        )
        .sort("block", "step")
    )


def emergence(traj: pl.DataFrame, band: pl.DataFrame) -> pl.DataFrame:
    """Per block: ``emergence_step`` (and its ``emergence_pythia_step``), null when the last value is in the band."""
    joined = traj.join(band.select("block", "band_low", "band_high"), on="block", how="inner").sort("block", "step")
    out = []
    for (block,), g in joined.group_by("block", maintain_order=True):
        outside = ((g["value"] < g["band_low"]) | (g["value"] > g["band_high"])).fill_null(False).to_list()
        first = None
        for i in range(len(outside) - 1, -1, -1):  # walk back from the last step while it stays outside
            if not outside[i]:
                break
            first = i
        out.append(
            {
                "block": block,
                "emergence_step": None if first is None else g["step"][first],
                "emergence_pythia_step": None if first is None else g["pythia_step"][first],
            }
        )
    schema = {"block": pl.Int64, "emergence_step": pl.Int64, "emergence_pythia_step": pl.Int64}
    return pl.DataFrame(out, schema=schema)


def block_table(frame: pl.DataFrame, arm: str, metric: str = "r2_lin") -> pl.DataFrame:
    """Per block: the band, ``final_step``, ``final`` value, ``z`` and the emergence step of ``arm``."""
    band = random_init_band(frame, metric)
    traj = trajectory(frame, arm, metric)
    final = traj.group_by("block").agg(
        pl.col("step").max().alias("final_step"), pl.col("value").sort_by("step").last().alias("final")
    )
    blocks = pl.concat([band.select("block"), final.select("block")]).unique().sort("block")
    table = (
        blocks.join(band, on="block", how="left")
        .join(final, on="block", how="left")
        .join(emergence(traj, band), on="block", how="left")
    )
    return table.with_columns(z=(pl.col("final") - pl.col("init_mean")) / pl.col("init_sd")).sort("block")


def spread_by_step(frame: pl.DataFrame, arm: str, metric: str = "r2_lin") -> pl.DataFrame:
    """Per measured step: ``n_blocks``, ``spread`` (sd over blocks), ``init_spread`` ± ``init_spread_sd``, ``ratio``."""
    init = usable(frame.filter(pl.col("arm") == BAND_ARM), metric)
    per_seed = init.group_by("seed").agg(pl.col(metric).cast(pl.Float64).std(ddof=1).alias("s"))
    init_spread, init_spread_sd = per_seed["s"].mean(), per_seed["s"].std(ddof=1)
    return (
        trajectory(frame, arm, metric)
        .group_by("step")
        .agg(pl.len().alias("n_blocks"), pl.col("value").std(ddof=1).alias("spread"))
        .with_columns(init_spread=pl.lit(init_spread, pl.Float64), init_spread_sd=pl.lit(init_spread_sd, pl.Float64))
        .with_columns(ratio=pl.col("spread") / pl.col("init_spread"))
        .sort("step")
    )
