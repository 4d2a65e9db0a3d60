"""The store's frame as the verdict reads it: usable rows, one evaluation, trained arms, trajectories.

Only rows with ``status == "ok"`` and a finite metric value count (:func:`usable`); anything else is a
gap, and gaps are never interpolated.  A trained arm's trajectory is kept per seed
(:func:`seed_trajectories`: one series per seed and block) for the verdict rules, and averaged over seeds
(:func:`trajectory`) for figures that draw one line per block.

**Spread across blocks** — at each step, for each trained seed the sample sd over blocks, averaged over the
seeds (a mean of seeds' trajectories would average their block-to-block differences away), next to the spread
at initialisation: for each random-init seed the sd over blocks, averaged over seeds (``init_spread``, with its
sd over seeds), so one trained model is compared with one untrained model.
"""

from __future__ import annotations

import polars as pl

from ..config import TRAINED_ARMS as _TRAINED
from ..config import Arm, is_twin

TRAINED_ARMS = tuple(str(a) for a in _TRAINED)
BAND_ARM = str(Arm.RANDOM_INIT)


def usable(frame: pl.DataFrame, metric: str = "r2_lin") -> pl.DataFrame:
    """Rows that count: ``status == "ok"`` and a finite ``metric``."""
    if metric not in frame.columns:
        raise ValueError(f"metric {metric!r} is not a column of the store (columns: {frame.columns})")
    value = pl.col(metric).cast(pl.Float64)
    return frame.filter((pl.col("status") == "ok") & value.is_not_null() & value.is_finite())


def one_evaluation(frame: pl.DataFrame, data_hash: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows of one evaluation (``data_hash`` and the R²_lin config) and a summary of the rows set aside.

    A store can hold units measured on other evaluation data or another metric
    config (an edited manifest); their numbers are not comparable.  Units that
    differ only in their companion metrics share an evaluation: their
    ``metric_core`` (the config's digest without companions) is the same.  The
    summary's ``metric_config`` column names that core digest.  Without
    ``data_hash`` the evaluation with the most rows is kept.
    """
    core = pl.coalesce("metric_core", "metric_config") if "metric_core" in frame.columns else pl.col("metric_config")
    frame = frame.with_columns(core.alias("_evaluation"))
    combos = (
        frame.group_by("data_hash", "_evaluation")
        .agg(pl.len().alias("rows"))
        .rename({"_evaluation": "metric_config"})
        .sort(["rows", "data_hash", "metric_config"], descending=[True, False, False], nulls_last=True)
    )
    if data_hash is not None:
        combos = combos.sort(pl.col("data_hash") != data_hash)
    if combos.is_empty():
        return frame.drop("_evaluation"), combos
    keep = combos.row(0, named=True)
    mask = (pl.col("data_hash").eq_missing(keep["data_hash"])) & (
        pl.col("_evaluation").eq_missing(keep["metric_config"])
    )
    return frame.filter(mask).drop("_evaluation"), combos.slice(1)


def init_of(commit: str | None) -> str | None:
    """The init scheme a random-init row's commit names (``init:<scheme>/config:<hash>``), or None."""
    if not commit or not commit.startswith("init:"):
        return None
    return commit.removeprefix("init:").split("/", 1)[0]


def one_init(frame: pl.DataFrame, scheme: str | None = None) -> tuple[pl.DataFrame, list[str]]:
    """The frame with only the random-init draws of one init scheme, and the schemes set aside.

    A store keeps the draws of an earlier ``[random_init] init`` (they are other units); a band mixing two inits
    describes neither.  ``scheme`` None is the family's real init: ``gpt-neox`` where such draws exist (only a
    GPT-NeoX can have them), else ``hf-default``.
    """
    init = frame.filter(pl.col("arm") == BAND_ARM)
    names = sorted({n for n in (init_of(c) for c in init["commit"].to_list()) if n})
    if len(names) <= 1 and (scheme is None or names == [scheme]):
        return frame, []
    keep = scheme or ("gpt-neox" if "gpt-neox" in names else "hf-default")
    other = pl.col("commit").map_elements(init_of, return_dtype=pl.Utf8).ne_missing(keep)
    return frame.filter(~((pl.col("arm") == BAND_ARM) & other)), [n for n in names if n != keep]


def trained_arms(frame: pl.DataFrame, metric: str = "r2_lin") -> list[str]:
    """The trained arms with usable rows, in the order hub, local, twin, then the twin's variants by name."""
    present = set(usable(frame, metric)["arm"].unique().to_list())
    variants = sorted(a for a in present if is_twin(a) and a != str(Arm.TWIN))  # twin:NAME, twin:perturbation
    return [a for a in TRAINED_ARMS if a in present] + variants


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


def seed_trajectories(frame: pl.DataFrame, arm: str, metric: str = "r2_lin") -> pl.DataFrame:
    """One arm's measured ``value`` per (seed, block, step), with ``pythia_step`` and ``tokens_seen``.

    A null seed (a Hub or local arm stores none) is seed 0 here; two rows of one seed, block and step (the
    same checkpoint stored under two evaluations is set aside earlier, by :func:`one_evaluation`) are averaged.
    """
    rows = usable(frame.filter(pl.col("arm") == arm), metric).with_columns(pl.col("seed").fill_null(0))
    return (
        rows.group_by("seed", "block", "step")
        .agg(
            pl.col(metric).cast(pl.Float64).mean().alias("value"),
            pl.col("pythia_step").first(),
            pl.col("tokens_seen").first(),
        )
        .sort("seed", "block", "step")
    )


def spread_by_step(frame: pl.DataFrame, arm: str, metric: str = "r2_lin") -> pl.DataFrame:
    """Per measured step: ``n_blocks`` (of the seed with the most), ``spread`` (each seed's sd over blocks, averaged
    over seeds), ``init_spread`` ± ``init_spread_sd``, ``ratio``."""
    init = usable(frame.filter(pl.col("arm") == BAND_ARM), metric)
    per_seed = init.group_by("seed").agg(pl.col(metric).cast(pl.Float64).std(ddof=1).alias("s"))
    init_spread, init_spread_sd = per_seed["s"].mean(), per_seed["s"].std(ddof=1)
    per_seed = (
        seed_trajectories(frame, arm, metric)
        .group_by("seed", "step")
        .agg(pl.len().alias("n_blocks"), pl.col("value").std(ddof=1).alias("spread"))
    )
    return (
        per_seed.group_by("step")
        .agg(pl.col("n_blocks").max(), pl.col("spread").mean())
        .with_columns(init_spread=pl.lit(init_spread, pl.Float64), init_spread_sd=pl.lit(init_spread_sd, pl.Float64))
        .with_columns(ratio=pl.col("spread") / pl.col("init_spread"))
        .sort("step")
    )
