"""Several trained runs of one architecture on one evaluation: do they reach the same place?

A *run* is one trained series: an experiment's trained arm and seed (PolyPythia: ``pythia-160m`` and
``pythia-160m-seed1`` … ``-seed9``, each a hub arm).  The frame holds the runs' rows and the random-init
draws of the architecture (one draw counted once, whichever experiments stored it: :func:`pooled`).
Steps are matched by step number; only the steps every run measured enter the trained band.

* **Trained band** (:func:`trained_band`), per block and common step, over the ``R`` runs' values: mean, sd
  (ddof 1), min and max, and the prediction interval for one new run, ``mean ± t(1 − α/2, R − 1) · sd ·
  √(1 + 1/R)`` — the random-init band's formula (:func:`~trajectory.verdicts.band.prediction_band`) applied to
  trained runs.  Its ``trained_width`` is ``2 · t · sd · √(1 + 1/R)``.
* **Each run's verdict** (:func:`run_verdicts`): the single-run rules (:mod:`trajectory.verdicts`) on that run
  alone against the random-init band, with its own init check and length of training.
* **The block's answer** (:func:`runs_agree`, :data:`BLOCK_RULE`) and **final values** (:func:`final_agreement`,
  :data:`FINAL_RULE`): see those rules; :func:`block_answers` applies both to every block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from ..engine.fdist import variance_ratio_p
from .band import prediction_band
from .exits import VERDICTS
from .frame import BAND_ARM, seed_trajectories
from .summary import RULE
from .table import block_table

DETERMINED = tuple(v for v in VERDICTS if v != "undetermined")
AGREEMENT = ("agree", "disagree", "undetermined")
TRAINED_COLUMNS = ("trained_runs", "trained_mean", "trained_sd", "trained_min", "trained_max", "trained_t",
                   "trained_low", "trained_high", "trained_width")  # fmt: skip

#: The trained band in words (the report and ``--json`` print it).
TRAINED_BAND = (
    "Trained band: at each step that every run measured (per block), over the R runs' values: mean, sd (ddof 1), "
    "min–max, and the prediction interval for one new run, mean ± t(1 − α/2, R − 1) · sd · √(1 + 1/R) (the "
    "random-init band's formula, over trained runs instead of untrained draws); its width is 2 · t · sd · √(1 + 1/R)."
)
#: The rule across runs, per block, in words.
BLOCK_RULE = (
    "Rule across runs: each run gets its own verdict per block under the single-run rule, against the random-init "
    "band. A block's runs agree when every run has the same verdict (learned-above, learned-below or within-band); "
    "they disagree when two runs have different ones of those three; otherwise (a run is undetermined, or fewer "
    "than 2 runs have a verdict) the answer is undetermined."
)
#: The rule for the runs' final values (the F test), in words.
FINAL_RULE = (
    "Rule for final values: at the block's last common step, the runs' sd s_T against the random-init draws' sd s_0, "
    "F = s_T² / s_0² on (R − 1, S − 1) degrees of freedom, two-sided p (normal draws assumed), α = 1 − coverage. "
    "They agree when p < α and s_T < s_0 (the runs end closer together than untrained draws lie), disagree when "
    "p < α and s_T > s_0 (further apart), and are undetermined when p ≥ α, when there are fewer than 2 runs or 2 "
    "random-init seeds, or when a run's step 0 lies outside the random-init band (the init check: the band may "
    "describe another init, so its spread is no yardstick). The band widths W_T, W_0 and W_T / W_0 stand beside "
    "it; they do not decide."
)


@dataclass(frozen=True)
class Run:
    """One trained series: ``experiment``'s ``arm`` at ``seed`` (0 for a hub or local arm, which store none),
    named ``label``; ``total_steps`` is its length of training (None: its last measured step)."""

    label: str
    experiment: str
    arm: str
    seed: int = 0
    total_steps: int | None = None


def pooled(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with each random-init draw once: rows of one ``commit`` (init scheme and architecture), seed and
    block stored by several experiments are one draw (a draw is a pure function of its seed)."""
    init = frame.filter(pl.col("arm") == BAND_ARM).unique(["commit", "seed", "block"], maintain_order=True)
    return pl.concat([init, frame.filter(pl.col("arm") != BAND_ARM)], how="vertical")


def _own_rows(frame: pl.DataFrame, run: Run) -> pl.DataFrame:
    mine = (pl.col("experiment") == run.experiment) & (pl.col("arm") == run.arm)
    return frame.filter(mine & (pl.col("seed").fill_null(0) == run.seed))


def run_series(frame: pl.DataFrame, runs: list[Run], metric: str = "r2_lin") -> pl.DataFrame:
    """Each run's measured value per (block, step): ``run`` (its index in ``runs``), ``block``, ``step``,
    ``value``, ``pythia_step``; only usable rows (:func:`~trajectory.verdicts.frame.usable`)."""
    parts = [
        seed_trajectories(_own_rows(frame, run), run.arm, metric).select(
            pl.lit(i, pl.Int64).alias("run"), "block", "step", "value", "pythia_step"
        )
        for i, run in enumerate(runs)
    ]
    return pl.concat(parts, how="vertical").sort("run", "block", "step")


def trained_band(series: pl.DataFrame, n_runs: int, coverage: float) -> pl.DataFrame:
    """Per block and step that all ``n_runs`` runs measured: ``trained_runs``, ``trained_mean``, ``trained_sd``,
    ``trained_min``, ``trained_max``, ``trained_t``, ``trained_low``, ``trained_high``, ``trained_width``
    (:data:`TRAINED_BAND`)."""
    keys = ["block", "step"]
    common = series.group_by(keys).agg(pl.col("run").n_unique().alias("n")).filter(pl.col("n") == n_runs)
    values = series.join(common.select(keys), on=keys).select(*keys, pl.col("run").alias("seed"), "value")
    band = prediction_band(values, coverage, by=("block", "step")).rename(
        {
            "n_seeds": "trained_runs",
            "init_mean": "trained_mean",
            "init_sd": "trained_sd",
            "t_quantile": "trained_t",
            "band_low": "trained_low",
            "band_high": "trained_high",
        }
    )
    extremes = values.group_by(keys).agg(
        pl.col("value").min().alias("trained_min"), pl.col("value").max().alias("trained_max")
    )
    return (
        band.join(extremes, on=keys)
        .with_columns(trained_width=pl.col("trained_high") - pl.col("trained_low"))
        .select(*keys, *TRAINED_COLUMNS)
        .sort(keys)
    )


def run_verdicts(frame: pl.DataFrame, runs: list[Run], metric: str, coverage: float) -> pl.DataFrame:
    """Each run's verdict table (:func:`~trajectory.verdicts.table.block_table`) on its own rows and the pooled
    random-init draws: one row per (run, block), with ``run`` (index) and ``label`` first."""
    init = frame.filter(pl.col("arm") == BAND_ARM)
    parts = [
        block_table(pl.concat([init, _own_rows(frame, run)]), run.arm, metric, coverage, run.total_steps).select(
            pl.lit(i, pl.Int64).alias("run"), pl.lit(run.label).alias("label"), pl.all()
        )
        for i, run in enumerate(runs)
    ]
    return pl.concat(parts, how="vertical").sort("block", "run")


def runs_agree(verdicts: dict[str, str]) -> tuple[str, str, str]:
    """``(agreement, verdict, reason)`` of one block from its runs' verdicts (``label → verdict``) by
    :data:`BLOCK_RULE`; ``verdict`` is the runs' common verdict when they agree, else ``undetermined``."""
    determined = {label: v for label, v in verdicts.items() if v in DETERMINED}
    kinds = sorted(set(determined.values()), key=VERDICTS.index)
    if len(kinds) > 1:
        groups = "; ".join(f"{k}: {', '.join(lab for lab, v in determined.items() if v == k)}" for k in kinds)
        open_ = [lab for lab in verdicts if lab not in determined]
        listed = f"runs disagree: {groups}" + (f"; undetermined: {', '.join(open_)}" if open_ else "")
        return "disagree", "undetermined", listed
    if len(verdicts) < 2:
        return "undetermined", "undetermined", f"{len(verdicts)} run with a verdict: agreement needs 2"
    if len(determined) == len(verdicts):
        return "agree", kinds[0], f"all {len(verdicts)} runs {kinds[0]}"
    open_ = [lab for lab in verdicts if lab not in determined]
    others = f"the other {len(determined)} {kinds[0]}" if kinds else "none is determined"
    listed = f"{len(open_)} of {len(verdicts)} runs undetermined ({', '.join(open_)}); {others}"
    return "undetermined", "undetermined", listed


def final_agreement(
    trained_sd: float | None, n_runs: int, init_sd: float | None, n_seeds: int, coverage: float
) -> tuple[str, float | None, str]:
    """``(agreement, p, reason)`` of the runs' final values by :data:`FINAL_RULE`."""
    if n_runs < 2 or n_seeds < 2 or trained_sd is None or init_sd is None:
        return "undetermined", None, f"needs ≥ 2 runs and ≥ 2 random-init seeds with a value (has {n_runs}, {n_seeds})"
    if not (init_sd > 0 and math.isfinite(init_sd) and math.isfinite(trained_sd)):
        return "undetermined", None, f"the random-init sd is {init_sd:g}: no scale to compare with"
    ratio = (trained_sd / init_sd) ** 2
    p = variance_ratio_p(ratio, n_runs - 1, n_seeds - 1)
    alpha = 1.0 - coverage
    said = f"s_T / s_0 = {trained_sd:.3g} / {init_sd:.3g} = {math.sqrt(ratio):.3g}, F test p = {p:.2g}"
    if p >= alpha:
        return "undetermined", p, f"{said} ≥ {alpha:g}: the runs' spread is not told apart from the random-init spread"
    if ratio < 1:
        return "agree", p, f"{said} < {alpha:g}: the runs end closer together than random-init draws lie"
    return "disagree", p, f"{said} < {alpha:g}: the runs end further apart than random-init draws lie"


def block_answers(table: pl.DataFrame, band: pl.DataFrame, init_band: pl.DataFrame, coverage: float) -> pl.DataFrame:
    """Per block: the runs' verdict counts, ``agreement``/``verdict``/``reason`` (:func:`runs_agree`), and at the
    last common step the trained and random-init bands, ``width_ratio`` = W_T / W_0, ``sd_ratio``, ``p`` and
    ``final_agreement``/``final_reason`` (:func:`final_agreement`)."""
    inits = {r["block"]: r for r in init_band.iter_rows(named=True)}
    finals = {r["block"]: r for r in band.sort("step").group_by("block").last().iter_rows(named=True)}
    rows = []
    for (block,), g in table.group_by("block", maintain_order=True):
        runs = dict(zip(g["label"].to_list(), g["verdict"].to_list()))
        agreement, verdict, reason = runs_agree(runs)
        init, last = inits.get(block, {}), finals.get(block, {})
        n_seeds = init.get("n_seeds") or 0
        init_width = None if init.get("band_low") is None else init["band_high"] - init["band_low"]
        t_width = last.get("trained_width")
        final, p, final_reason = final_agreement(
            last.get("trained_sd"), last.get("trained_runs") or 0, init.get("init_sd"), n_seeds, coverage
        )
        warned = sorted(set(g.drop_nulls("warning")["label"].to_list()))
        if warned:  # the init check failed: the band's spread may be another init's
            final = "undetermined"
            final_reason = (
                f"step 0 of {', '.join(warned)} lies outside the random-init band (see the warnings): the band may "
                f"describe another init, so its spread is no yardstick ({final_reason})"
            )
        sd_ratio = last.get("trained_sd") / init["init_sd"] if last and init.get("init_sd") else None
        rows.append(
            {"block": block, "runs": len(runs), **{v: sum(x == v for x in runs.values()) for v in VERDICTS},
             "agreement": agreement, "verdict": verdict, "reason": reason,
             "final_step": last.get("step"), **{k: last.get(k) for k in BAND_COLUMNS},
             "init_seeds": n_seeds, "init_mean": init.get("init_mean"), "init_sd": init.get("init_sd"),
             "init_low": init.get("band_low"), "init_high": init.get("band_high"), "init_width": init_width,
             "width_ratio": t_width / init_width if t_width is not None and init_width else None,
             "sd_ratio": sd_ratio, "p": p, "final_agreement": final, "final_reason": final_reason}
        )  # fmt: skip
    return pl.DataFrame(rows, schema=ANSWER_SCHEMA).sort("block")


BAND_COLUMNS = tuple(c for c in TRAINED_COLUMNS if c != "trained_t")
ANSWER_SCHEMA = {
    "block": pl.Int64, "runs": pl.Int64, **{v: pl.Int64 for v in VERDICTS},
    "agreement": pl.Utf8, "verdict": pl.Utf8, "reason": pl.Utf8, "final_step": pl.Int64,
    **{k: pl.Int64 if k == "trained_runs" else pl.Float64 for k in BAND_COLUMNS},
    "init_seeds": pl.Int64, "init_mean": pl.Float64, "init_sd": pl.Float64, "init_low": pl.Float64,
    "init_high": pl.Float64, "init_width": pl.Float64, "width_ratio": pl.Float64, "sd_ratio": pl.Float64,
    "p": pl.Float64, "final_agreement": pl.Utf8, "final_reason": pl.Utf8,
}  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    """The runs compared: ``band`` per (block, common step) holds the trained band beside the random-init band
    (``init_seeds``, ``init_mean``, ``init_sd``, ``init_low``, ``init_high``, ``init_width``); ``run_table`` each
    run's verdict per block; ``blocks`` the answers per block (:func:`block_answers`); ``series`` every
    measured value of every run."""

    runs: tuple[Run, ...]
    metric: str
    coverage: float
    init_band: pl.DataFrame
    band: pl.DataFrame
    run_table: pl.DataFrame
    blocks: pl.DataFrame
    series: pl.DataFrame

    def warnings(self) -> list[str]:
        """The init check's warnings, one per run that has one."""
        rows = self.run_table.drop_nulls("warning").unique(["label", "warning"], maintain_order=True)
        return [f"{r['label']}: {r['warning']}" for r in rows.iter_rows(named=True)]

    def outside_band(self) -> dict[str, list[int]]:
        """Per run, the steps it measured that are not in the trained band (not measured by every run)."""
        common = set(self.band["step"].to_list())
        return {
            run.label: sorted(set(self.series.filter(pl.col("run") == i)["step"].to_list()) - common)
            for i, run in enumerate(self.runs)
        }


def compare_runs(frame: pl.DataFrame, runs: list[Run], metric: str, coverage: float) -> Comparison:
    """Everything :mod:`trajectory.verdicts.runs` says about ``runs``, whose rows and random-init draws
    ``frame`` holds (one evaluation, one init: the caller's checks)."""
    from .band import random_init_band

    frame = pooled(frame)
    init_band = random_init_band(frame, metric, coverage)
    series = run_series(frame, runs, metric)
    band = trained_band(series, len(runs), coverage)
    table = run_verdicts(frame, runs, metric, coverage)
    init = init_band.select(
        "block",
        pl.col("n_seeds").alias("init_seeds"),
        "init_mean",
        "init_sd",
        pl.col("band_low").alias("init_low"),
        pl.col("band_high").alias("init_high"),
        (pl.col("band_high") - pl.col("band_low")).alias("init_width"),
    )
    return Comparison(
        runs=tuple(runs),
        metric=metric,
        coverage=coverage,
        init_band=init_band,
        band=band.join(init, on="block", how="left").sort("block", "step"),
        run_table=table,
        blocks=block_answers(table, band, init_band, coverage),
        series=series,
    )


def _records(frame: pl.DataFrame) -> list[dict]:
    clean = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
    return [{k: clean(v) for k, v in r.items()} for r in frame.iter_rows(named=True)]


def comparison_json(cmp: Comparison, experiments: list[dict]) -> dict:
    """The comparison as one JSON object: the runs, the definitions and rules, the warnings, the answers per
    block, each run's verdict per block, and the trained band beside the random-init band per block and step."""
    return {
        "experiments": experiments,
        "runs": [{"run": i, **vars(run)} for i, run in enumerate(cmp.runs)],
        "metric": cmp.metric,
        "coverage": cmp.coverage,
        "steps": "matched by step number; the trained band uses only the steps every run measured",
        "trained_band": TRAINED_BAND,
        "random_init_band": "mean ± t(1 − α/2, S − 1) · sd · √(1 + 1/S) over the S random-init seeds",
        "rules": {"single_run": RULE, "runs": BLOCK_RULE, "final": FINAL_RULE},
        "warnings": cmp.warnings(),
        "outside_band": cmp.outside_band(),
        "blocks": _records(cmp.blocks),
        "run_verdicts": _records(cmp.run_table.drop("warning")),
        "band": _records(cmp.band),
    }
