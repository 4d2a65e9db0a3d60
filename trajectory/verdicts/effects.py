"""The effect of a regulariser: per block, its variant's final value against the plain twin's, across seeds.

For block b, with the final (last measured step) values ``a_1 … a_n`` of the regularised variant's seeds and
``p_1 … p_m`` of the plain twin's, the effect is ``Δ = ā − p̄`` and its interval the pooled two-sample Student
t interval ``Δ ± t(1 − α/2, n + m − 2) · s_p · √(1/n + 1/m)``, ``s_p² = ((n−1) s_a² + (m−1) s_p²) / (n + m − 2)``
(equal variances assumed; None when n + m < 3).  The same for the held-out loss: the intact model's mean
next-token loss on the held-out windows, ``swap_loss − swap_dloss`` (:mod:`trajectory.engine.swap`), one value
per model, present where the swap companion was measured (the last step is a companion point).
"""

from __future__ import annotations

import math

import polars as pl

from ..config import DEFAULT_BAND_COVERAGE
from ..engine.tdist import t_quantile
from .frame import usable

EFFECT_SCHEMA = {
    "variant": pl.Utf8, "block": pl.Int64, "quantity": pl.Utf8, "n_variant": pl.Int64, "n_plain": pl.Int64,
    "plain_mean": pl.Float64, "variant_mean": pl.Float64, "delta": pl.Float64, "low": pl.Float64, "high": pl.Float64,
}  # fmt: skip


def difference(a: list[float], b: list[float], coverage: float = DEFAULT_BAND_COVERAGE) -> tuple:
    """(mean a − mean b, low, high) under the module docstring's pooled t interval; low/high None if n + m < 3."""
    n, m = len(a), len(b)
    ma, mb = sum(a) / n, sum(b) / m
    if n + m < 3:
        return ma - mb, None, None
    ss = sum((x - ma) ** 2 for x in a) + sum((x - mb) ** 2 for x in b)
    half = t_quantile(0.5 + coverage / 2, n + m - 2) * math.sqrt(ss / (n + m - 2)) * math.sqrt(1 / n + 1 / m)
    return ma - mb, ma - mb - half, ma - mb + half


def _finals(frame: pl.DataFrame, arm: str, column: str) -> pl.DataFrame:
    rows = usable(frame.filter(pl.col("arm") == arm), column)
    last = rows.group_by("seed").agg(pl.col("step").max().alias("last"))
    return rows.join(last, on="seed").filter(pl.col("step") == pl.col("last"))


def regulariser_effects(
    frame: pl.DataFrame, variants: list[str], metric: str = "r2_lin", coverage: float = DEFAULT_BAND_COVERAGE
) -> pl.DataFrame:
    """Per variant arm and block: Δ final ``metric`` and Δ final held-out loss against ``twin`` (docstring)."""
    if "swap_loss" in frame.columns:
        frame = frame.with_columns(heldout_loss=pl.col("swap_loss") - pl.col("swap_dloss"))
    rows = []
    for variant in variants:
        for quantity in (metric, "heldout_loss"):
            if quantity not in frame.columns:
                continue
            plain, var = _finals(frame, "twin", quantity), _finals(frame, variant, quantity)
            for block in sorted(set(plain["block"].to_list()) & set(var["block"].to_list())):
                if quantity == "heldout_loss" and block != min(plain["block"]):
                    continue  # one loss per model: stated once
                a = var.filter(pl.col("block") == block)[quantity].to_list()
                b = plain.filter(pl.col("block") == block)[quantity].to_list()
                delta, low, high = difference(a, b, coverage)
                rows.append({"variant": variant, "block": None if quantity == "heldout_loss" else block,
                             "quantity": quantity, "n_variant": len(a), "n_plain": len(b),
                             "plain_mean": sum(b) / len(b), "variant_mean": sum(a) / len(a),
                             "delta": delta, "low": low, "high": high})  # fmt: skip
    return pl.DataFrame(rows, schema=EFFECT_SCHEMA)


def regularised_arms(manifest) -> list[str]:
    """The manifest's twin variants that add a regulariser of non-zero weight."""
    return [a for a, s in manifest.twin_specs().items() if s.regulariser is not None and s.regulariser.weight != 0]
