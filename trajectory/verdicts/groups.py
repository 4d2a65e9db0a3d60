"""Two groups of trained runs: which one's final values spread further, per block?

PolyPythia's decoupled seeds: ``pythia-160m-data-seed{1,2,3}`` vary only the data order, ``-weight-seed{1,2,3}``
only the init.  If a block's final R²_lin spreads further across the runs that differ in their init than across
those that differ in their data order, the init decides it more than the data order does, and the other way
round.  Each group's spread is its trained band's sd at the block's last step every run of that group measured
(:func:`~trajectory.verdicts.runs.trained_band`, the multi-run report's numbers).
"""

from __future__ import annotations

import math

import polars as pl

from ..engine.fdist import variance_ratio_p
from .runs import Comparison

#: The rule between two groups of runs, per block, in words (``groups.md`` prints it).
GROUP_RULE = (
    "Rule between two groups of runs: per block, each group's sd of final values (s_A over its R_A runs, s_B over "
    "its R_B, at each group's last common step), F = s_B² / s_A² on (R_B − 1, R_A − 1) degrees of freedom, two-sided "
    "p (normal values assumed), α = 1 − coverage. When p < α, the group whose runs spread further is the one whose "
    "varied factor decides the block more; when p ≥ α, or a group has fewer than 2 runs, it is undetermined. With 3 "
    "runs a group (2 and 2 degrees of freedom), only a variance ratio beyond about 39 (α = 0.05) decides."
)


def _finals(cmp: Comparison) -> pl.DataFrame:
    """Per block: the trained band's sd and run count at the group's last common step."""
    band = cmp.band.filter(pl.col("trained_runs").is_not_null()).sort("block", "step")
    return band.group_by("block", maintain_order=True).last().select("block", "step", "trained_sd", "trained_runs")


def which_decides(a: Comparison, b: Comparison, names: tuple[str, str], coverage: float) -> pl.DataFrame:
    """Per block: each group's final spread, the F test and the answer (``names[0]``, ``names[1]`` or
    ``undetermined``) with one sentence, by :data:`~trajectory.verdicts.groups.GROUP_RULE`."""
    joined = _finals(a).join(_finals(b), on="block", suffix="_b").sort("block")
    rows = []
    for r in joined.iter_rows(named=True):
        answer, p, sentence = decide(r["trained_sd"], r["trained_runs"], r["trained_sd_b"], r["trained_runs_b"],
                                     names, coverage)  # fmt: skip
        rows.append({"block": r["block"], "sd_a": r["trained_sd"], "runs_a": r["trained_runs"],
                     "sd_b": r["trained_sd_b"], "runs_b": r["trained_runs_b"], "p": p, "decides": answer,
                     "sentence": f"Block {r['block']}: {sentence}"})  # fmt: skip
    return pl.DataFrame(rows)


def decide(
    sd_a: float | None, n_a: int, sd_b: float | None, n_b: int, names: tuple[str, str], coverage: float
) -> tuple[str, float | None, str]:
    """``(answer, p, sentence)`` for one block, by :data:`~trajectory.verdicts.groups.GROUP_RULE`."""
    if n_a < 2 or n_b < 2 or sd_a is None or sd_b is None or not (math.isfinite(sd_a) and math.isfinite(sd_b)):
        return "undetermined", None, f"undetermined: each group needs ≥ 2 runs with a final value (has {n_a}, {n_b})"
    if sd_a == 0 and sd_b == 0:
        return "undetermined", None, "undetermined: both groups end at one value (sd 0)"
    ratio = math.inf if sd_a == 0 else (sd_b / sd_a) ** 2
    p = 0.0 if math.isinf(ratio) or ratio == 0 else variance_ratio_p(ratio, n_b - 1, n_a - 1)
    alpha = 1.0 - coverage
    said = f"s({names[0]}) = {sd_a:.3g}, s({names[1]}) = {sd_b:.3g}, F = {ratio:.3g}, p = {p:.2g}"
    if p >= alpha:
        return "undetermined", p, f"{said} ≥ {alpha:g}: the two spreads are not told apart"
    wider = names[1] if ratio > 1 else names[0]
    return (
        wider,
        p,
        f"{said} < {alpha:g}: the {wider} runs spread further, so varying their {wider} moves the block more",
    )
