"""The random-init prediction band, and the check that a trained run starts inside its own band.

**Prediction band for one new draw.**  Over ``S`` seeds with values ``m_1 … m_S`` of one block, with mean
``m̄`` and sample sd ``s`` (ddof 1), one further draw ``m_new`` from the same normal distribution satisfies

    (m_new − m̄) / (s · √(1 + 1/S))  ~  Student t with S − 1 degrees of freedom,

so ``m̄ ± t(1 − α/2, S − 1) · s · √(1 + 1/S)`` covers it with probability ``1 − α`` (the ``coverage``,
``[random_init] coverage``, 0.95 by default).  With 5 seeds at 95% the half-width is 3.04 s, not the 2 s of
"mean ± 2 sd", which covers one new draw only ≈ 82% of the time.  Fewer than 2 seeds give no band.

**Init check.**  A trained arm's step 0 *is* one draw of its initialisation.  When the band describes
another init (``[random_init] init`` differs from how the run started), step 0 lies outside it and every
later comparison measures the difference of inits, not training.  Each (seed, block) step-0 value is held to
the band widened for multiple comparisons: coverage ``1 − α / K`` over the ``K`` step-0 values checked
(Bonferroni), so a matched init raises a false alarm with probability at most α over the whole arm.
"""

from __future__ import annotations

import math

import polars as pl

from ..config import DEFAULT_BAND_COVERAGE
from ..engine.tdist import t_quantile
from .frame import BAND_ARM, seed_trajectories, usable

BAND_SCHEMA = {
    "block": pl.Int64,
    "n_seeds": pl.Int64,
    "init_mean": pl.Float64,
    "init_sd": pl.Float64,
    "t_quantile": pl.Float64,
    "band_low": pl.Float64,
    "band_high": pl.Float64,
}


def prediction_half_width(sd: float | None, n: int, coverage: float = DEFAULT_BAND_COVERAGE) -> float | None:
    """``t(1 − α/2, n − 1) · sd · √(1 + 1/n)``, α = 1 − coverage; None for ``n < 2`` or no sd."""
    if n < 2 or sd is None or not math.isfinite(sd):
        return None
    return t_quantile(0.5 + coverage / 2.0, n - 1) * sd * math.sqrt(1.0 + 1.0 / n)


def prediction_band(
    values: pl.DataFrame, coverage: float = DEFAULT_BAND_COVERAGE, by: tuple[str, ...] = ("block",)
) -> pl.DataFrame:
    """Per block of ``values`` (columns ``block``, ``seed``, ``value``; one value per seed and block): ``n_seeds``,
    ``init_mean``, ``init_sd``, ``t_quantile``, ``band_low``, ``band_high`` (module docstring).

    Reusable on any set of draws, e.g. trained runs at one step (a trained band: ``by=("block", "step")``)."""
    stats = (
        values.group_by(*by)
        .agg(
            pl.col("seed").n_unique().alias("n_seeds"),
            pl.col("value").cast(pl.Float64).mean().alias("init_mean"),
            pl.col("value").cast(pl.Float64).std(ddof=1).alias("init_sd"),
        )
        .sort(*by)
    )
    rows = []
    for r in stats.iter_rows(named=True):
        n, sd = int(r["n_seeds"]), r["init_sd"]
        half = prediction_half_width(sd, n, coverage)
        t = t_quantile(0.5 + coverage / 2.0, n - 1) if half is not None else None
        low = r["init_mean"] - half if half is not None else None
        high = r["init_mean"] + half if half is not None else None
        rows.append({**r, "init_sd": sd if n >= 2 else None, "t_quantile": t, "band_low": low, "band_high": high})
    return pl.DataFrame(rows, schema={**{k: values.schema[k] for k in by}, **BAND_SCHEMA})


def random_init_band(
    frame: pl.DataFrame, metric: str = "r2_lin", coverage: float = DEFAULT_BAND_COVERAGE
) -> pl.DataFrame:
    """The prediction band of each block over the store's random-init seeds (:func:`prediction_band`)."""
    rows = usable(frame.filter(pl.col("arm") == BAND_ARM), metric)
    values = rows.select("block", "seed", pl.col(metric).cast(pl.Float64).alias("value"))
    return prediction_band(values.group_by("block", "seed").agg(pl.col("value").mean()), coverage)


def init_check(
    frame: pl.DataFrame, arm: str, metric: str = "r2_lin", coverage: float = DEFAULT_BAND_COVERAGE
) -> tuple[pl.DataFrame, str | None]:
    """Each step-0 value of ``arm`` against the Bonferroni-widened band (module docstring), and a warning.

    Returns the checked values (``seed, block, value, check_low, check_high, outside``) and, when any lies
    outside, one sentence naming them; (empty, None) when the arm has no step 0 or there is no band.
    """
    start = seed_trajectories(frame, arm, metric).filter(pl.col("step") == 0)
    init = usable(frame.filter(pl.col("arm") == BAND_ARM), metric)
    if start.is_empty() or init.is_empty():
        return start.head(0), None
    k = start.height
    band = random_init_band(frame, metric, 1.0 - (1.0 - coverage) / k)
    checked = (
        start.join(band.select("block", "init_mean", "band_low", "band_high"), on="block", how="inner")
        .drop_nulls("band_low")
        .rename({"band_low": "check_low", "band_high": "check_high"})
        .with_columns(outside=(pl.col("value") < pl.col("check_low")) | (pl.col("value") > pl.col("check_high")))
        .sort("seed", "block")
    )
    bad = checked.filter(pl.col("outside"))
    if bad.is_empty():
        return checked, None
    shown = ", ".join(
        f"block {r['block']}" + (f" seed {r['seed']}" if checked["seed"].n_unique() > 1 else "")
        + f": {r['value']:.4f} vs {r['check_low']:.4f}–{r['check_high']:.4f}"
        for r in bad.head(4).iter_rows(named=True)
    )  # fmt: skip
    more = f", and {bad.height - 4} more" if bad.height > 4 else ""
    return checked, (
        f"step 0 of {arm} lies outside its random-init band in {bad.height} of {k} blocks ({shown}{more}; "
        f"band widened to {1.0 - (1.0 - coverage) / k:.4f} coverage for {k} comparisons): the band describes "
        "another initialisation than this run's (see [random_init] init), so no block of this arm is called learned"
    )


def shared_inits(frame: pl.DataFrame) -> list[str]:
    """One sentence per random-init seed whose weights hash equals a trained arm's step-0 weights hash: such a
    draw is the run's own init, not an independent one (``trajectory.arms.random_init`` draws the band from
    child seeds so that this never happens; a store written otherwise is flagged here)."""
    cols = ("arm", "seed", "step", "weights_hash")
    if any(c not in frame.columns for c in cols):
        return []
    units = frame.select(cols).drop_nulls("weights_hash").unique()
    band = units.filter(pl.col("arm") == BAND_ARM).select("seed", "weights_hash")
    starts = units.filter((pl.col("arm") != BAND_ARM) & (pl.col("step") == 0)).select(
        pl.col("arm"), pl.col("seed").alias("run_seed"), "weights_hash"
    )
    shared = band.join(starts, on="weights_hash").sort("seed", "arm", "run_seed")
    return [
        f"random-init seed {r['seed']} has the weights of {r['arm']} seed {r['run_seed']}'s step 0 "
        f"(weights hash {r['weights_hash']}): the band is not independent of that run"
        for r in shared.iter_rows(named=True)
    ]
