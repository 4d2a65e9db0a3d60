"""The verdict in numbers: is each block's linearity learned, or already there at initialisation?

Pure functions on the store's frame (``trajectory.store.ROW_SCHEMA``); nothing is recomputed from models.
Only rows with ``status == "ok"`` and a finite metric value count; anything else is a gap, never
interpolated.  For a metric ``m`` (default ``r2_lin``), block ``b`` and a trained arm, the rules are:

1. **Band** (:mod:`.band`) — over the ``S`` random-init seeds, the two-sided prediction interval for *one
   new draw*: ``mean ± t(1 − α/2, S − 1) · sd · √(1 + 1/S)``, coverage ``1 − α`` from ``[random_init]
   coverage`` (0.95).  ``S < 2``: no band, and every verdict of the block is ``undetermined``.
2. **Init check** (:mod:`.band`) — every step-0 value of the arm (any seed) is held to the band widened to
   coverage ``1 − α/K`` over its ``K`` step-0 values; if any lies outside, the band describes another init
   than the run's: a warning, and every block of the arm is ``undetermined``.
3. **Events** of each seed's series of measured steps (:mod:`.exits`): the *first exit* (first step strictly
   outside, above or below); the *peak* (largest value and its step); the *persistent exit* (first step of the
   tail of measured points that all lie outside on the side of the last one).  The persistent exit *holds*
   when that tail has ≥ 3 measured points and spans ≥ 10% of the arm's training (its step to the last
   measured step, over the schedule's length, or the twin's update budget); otherwise it is "not yet".
4. **Verdict of a seed**: ``learned-above`` / ``learned-below`` when the persistent exit holds (its side)
   and starts after step 0; ``within-band`` when the last measured value is inside the band; ``undetermined``
   when the last value is outside but the exit does not hold yet, when it holds from step 0 on (the value
   was there at initialisation) or, with no step 0 measured, from the first measured step on (no value lies
   inside the band), when there is no band, or when the init check failed.
5. **Verdict of a block**: the seeds' verdict when every trained seed of the arm has the same one; else
   ``undetermined`` with the reason "the seeds' verdicts differ: …".

``z = (final − mean) / sd`` of the last measured value is reported beside the verdict but does not decide it.

The band uses the random-init draws of one init scheme only (:func:`.one_init`: the manifest's
``[random_init] init``); draws of another init left in the store are set aside.

Modules: :mod:`.frame` (usable rows, one evaluation, one init, trajectories, spread across blocks), :mod:`.band`,
:mod:`.exits` (the rules on one series, plain lists), :mod:`.table` (the rules on frames: one arm's per-seed
trajectories and a band → :func:`.arm_verdicts`; a store's frame → :func:`.verdict_table`), :mod:`.summary`
(the sentences and JSON records that follow from a verdict table), :mod:`.runs` (several trained runs of
one architecture: the trained band, each run's verdict, and whether the runs agree).
"""

from .band import init_check, prediction_band, prediction_half_width, random_init_band, shared_inits
from .exits import MIN_FRACTION, MIN_POINTS, VERDICTS, Events, agreed, series_events, series_verdict, side
from .frame import (
    BAND_ARM,
    TRAINED_ARMS,
    init_of,
    one_evaluation,
    one_init,
    seed_trajectories,
    spread_by_step,
    trained_arms,
    trajectory,
    usable,
)
from .runs import (
    BLOCK_RULE,
    FINAL_RULE,
    TRAINED_BAND,
    Comparison,
    Run,
    block_answers,
    compare_runs,
    comparison_json,
    final_agreement,
    pooled,
    run_series,
    run_verdicts,
    runs_agree,
    trained_band,
)
from .summary import (
    RULE,
    TAIL_HEADER,
    TAIL_RULE,
    arm_sentence,
    as_json,
    band_sentence,
    counts,
    evaluation_sentence,
    init_names,
    interval_cells,
    metric_shift_sentences,
    records,
    token_tail_rows,
)
from .table import arm_verdicts, block_table, compare_metrics, verdict_table

__all__ = [
    "TAIL_HEADER",
    "TAIL_RULE",
    "token_tail_rows",
    "BAND_ARM",
    "BLOCK_RULE",
    "FINAL_RULE",
    "TRAINED_BAND",
    "Comparison",
    "Run",
    "block_answers",
    "compare_runs",
    "comparison_json",
    "final_agreement",
    "pooled",
    "run_series",
    "run_verdicts",
    "runs_agree",
    "trained_band",
    "MIN_FRACTION",
    "MIN_POINTS",
    "RULE",
    "TRAINED_ARMS",
    "VERDICTS",
    "Events",
    "agreed",
    "arm_sentence",
    "as_json",
    "arm_verdicts",
    "band_sentence",
    "block_table",
    "compare_metrics",
    "counts",
    "evaluation_sentence",
    "init_check",
    "init_names",
    "init_of",
    "interval_cells",
    "metric_shift_sentences",
    "one_evaluation",
    "one_init",
    "prediction_band",
    "prediction_half_width",
    "random_init_band",
    "shared_inits",
    "records",
    "seed_trajectories",
    "series_events",
    "series_verdict",
    "side",
    "spread_by_step",
    "trained_arms",
    "trajectory",
    "usable",
    "verdict_table",
]
