"""Do one trained arm's seeds agree?  One rule, the multi-run rule for final values, applied to the seeds.

For a trained arm with ``R ≥ 2`` seeds and block ``b``: at the last step every seed measured, the seeds' sd
``s_T`` (ddof 1) against the random-init draws' sd ``s_0``, ``F = s_T² / s_0²`` on ``(R − 1, S − 1)`` degrees of
freedom, two-sided p, α = 1 − coverage (:data:`~trajectory.verdicts.runs.FINAL_RULE`,
:func:`~trajectory.verdicts.runs.final_agreement`):

* **agree** when p < α and s_T < s_0: the seeds end closer together than untrained draws lie;
* **disagree** when p < α and s_T > s_0: they end further apart than untrained draws lie;
* **undetermined** when p ≥ α, with fewer than 2 seeds or 2 random-init draws, or when a seed's step 0 lies
  outside the random-init band (the init check).

This is the only sense in which the report says seeds agree or disagree about a block's final value.  Whether
the seeds have the same *verdict* is a separate, categorical fact (the block's verdict is theirs when they all
have the same one, :func:`~trajectory.verdicts.exits.agreed`), and the report names it apart.
"""

from __future__ import annotations

import polars as pl

from .band import init_check, random_init_band
from .frame import seed_trajectories
from .runs import FINAL_RULE, final_agreement

SEED_RULE = (
    "Rule for the seeds' final values (the multi-run rule, applied to one arm's seeds): "
    + FINAL_RULE.removeprefix("Rule for final values: ").replace("runs", "seeds")
)


def seed_agreement(frame: pl.DataFrame, arm: str, metric: str = "r2_lin", coverage: float = 0.95) -> pl.DataFrame:
    """Per block: ``step`` (the last step every seed measured), ``seeds``, ``finals`` (each seed's value there,
    in seed order), ``seeds_sd`` s_T, ``init_sd`` s_0, ``draws`` S, ``sd_ratio``, ``p``, ``agreement`` and
    ``reason`` (module docstring).  Empty when the arm has fewer than 2 seeds."""
    series = seed_trajectories(frame, arm, metric)
    seeds = sorted(series["seed"].unique().to_list())
    if len(seeds) < 2:
        return pl.DataFrame()
    init = {r["block"]: r for r in random_init_band(frame, metric, coverage).iter_rows(named=True)}
    _, warning = init_check(frame, arm, metric, coverage)
    rows = []
    for (block,), g in series.group_by("block", maintain_order=True):
        common = g.group_by("step").agg(pl.col("seed").n_unique().alias("n")).filter(pl.col("n") == len(seeds))
        step = common["step"].max() if common.height else None
        last = g.filter(pl.col("step") == step).sort("seed") if step is not None else g.head(0)
        sd = last["value"].std(ddof=1) if last.height >= 2 else None
        band = init.get(block, {})
        agreement, p, reason = final_agreement(sd, last.height, band.get("init_sd"), band.get("n_seeds") or 0, coverage)
        if warning:
            agreement, reason = "undetermined", f"a seed's step 0 lies outside the random-init band ({reason})"
        s0 = band.get("init_sd")
        rows.append({
            "block": block, "step": step, "seeds": last.height, "finals": last["value"].to_list(), "seeds_sd": sd,
            "init_sd": s0, "draws": band.get("n_seeds"), "sd_ratio": sd / s0 if sd is not None and s0 else None,
            "p": p, "agreement": agreement, "reason": reason,
        })  # fmt: skip
    return pl.DataFrame(rows).sort("block")


def seed_sentence(agreement: pl.DataFrame, arm: str) -> str:
    """How many blocks' seeds agree, disagree, or are undetermined about their final values, by the rule."""
    counts = {v: int((agreement["agreement"] == v).sum()) for v in ("agree", "disagree", "undetermined")}
    return (
        f"{arm}: by the rule for the seeds' final values, the seeds agree in {counts['agree']}, disagree in "
        f"{counts['disagree']} and are undetermined in {counts['undetermined']} of {agreement.height} blocks."
    )
