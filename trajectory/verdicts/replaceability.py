"""Does linearity predict replaceability?  Δloss of a replaced FFN against its R²_lin, over blocks and steps.

From stored rows only: for every trained arm's (block, step) point that has both R²_lin and a replacement
Δloss (``swap_dloss``: the FFN replaced by its affine fit; ``remove_dloss``: the FFN outputs 0), the values are
averaged over seeds, and the association is the **Spearman rank correlation** ρ between R²_lin and Δloss
(the Pearson correlation of their average ranks; ties share a rank).  A linear FFN should cost little to
replace by its affine map, so ρ < 0 is the expected sign.

**Interval**: a percentile bootstrap over the (block, step) points: 2,000 resamples of the points with
replacement (seeded by ``BOOT_SEED``), ρ recomputed on each, the 2.5% and 97.5% quantiles.  Points of one
block at neighbouring steps are correlated, and the bootstrap treats them as independent, so the interval is
narrower than one over independent models would be; it says how stable ρ is over these points, not how it
would generalise to other models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from .frame import TRAINED_ARMS, usable

#: The replacement Δloss columns this analysis reads, and how they are named.
DLOSS = {"swap_dloss": "affine swap", "remove_dloss": "removal"}
BOOT = 2000
BOOT_SEED = 0


def ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1 … n; ties share the mean of their ranks)."""
    order = np.argsort(values, kind="stable")
    sorted_v = values[order]
    r = np.empty(len(values))
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_v[end] != sorted_v[start]:
            r[order[start:end]] = (start + end + 1) / 2.0  # mean of ranks start+1 … end
            start = end
    return r


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ: the Pearson correlation of the average ranks (NaN when either is constant)."""
    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denom if denom > 0 else math.nan


def bootstrap_interval(x: np.ndarray, y: np.ndarray, n_boot: int = BOOT, seed: int = BOOT_SEED) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of ρ over resampled points (module docstring)."""
    gen = np.random.default_rng(seed)
    draws = [spearman(x[idx], y[idx]) for idx in gen.integers(0, len(x), size=(n_boot, len(x)))]
    finite = np.array([d for d in draws if math.isfinite(d)])
    if len(finite) < n_boot // 2:
        return math.nan, math.nan
    return float(np.quantile(finite, 0.025)), float(np.quantile(finite, 0.975))


@dataclass(frozen=True)
class Association:
    """ρ of one Δloss column against R²_lin over ``n`` points, its bootstrap interval, and the points."""

    dloss: str
    rho: float
    low: float
    high: float
    n: int
    points: pl.DataFrame  # arm, block, step, r2_lin, dloss (seed means)


def points(frame: pl.DataFrame, dloss: str, metric: str = "r2_lin") -> pl.DataFrame:
    """Trained (arm, block, step) points with both values, averaged over seeds."""
    if dloss not in frame.columns:
        return pl.DataFrame(
            schema={"arm": pl.Utf8, "block": pl.Int64, "step": pl.Int64, metric: pl.Float64, "dloss": pl.Float64}
        )
    rows = usable(usable(frame.filter(pl.col("arm").is_in(TRAINED_ARMS)), metric), dloss)
    return (
        rows.group_by("arm", "block", "step")
        .agg(pl.col(metric).cast(pl.Float64).mean(), pl.col(dloss).cast(pl.Float64).mean().alias("dloss"))
        .sort("arm", "block", "step")
    )


def association(frame: pl.DataFrame, dloss: str = "swap_dloss", metric: str = "r2_lin") -> Association | None:
    """ρ with its interval for ``dloss`` against ``metric``; None with fewer than 3 points."""
    pts = points(frame, dloss, metric)
    if pts.height < 3:
        return None
    x, y = pts[metric].to_numpy(), pts["dloss"].to_numpy()
    low, high = bootstrap_interval(x, y)
    return Association(dloss, spearman(x, y), low, high, pts.height, pts)


def found(frame: pl.DataFrame, metric: str = "r2_lin") -> list[Association]:
    """The association of every Δloss column the store holds with ≥ 3 points."""
    return [a for a in (association(frame, col, metric) for col in DLOSS) if a is not None]


def report_parts(a: Association, metric: str = "r2_lin") -> list:
    """The report's paragraph and table (header, rows, collapsed) for ``a``."""
    header, rows = table_rows(a, metric)
    return [sentence(a, metric), (header, tuple(rows), True)]


def sentence(a: Association, metric: str = "r2_lin") -> str:
    """The answer in one paragraph: ρ, its interval, and the ranges the two numbers span."""
    p = a.points
    return (
        f"{DLOSS.get(a.dloss, a.dloss)} Δloss against {metric} over {a.n} (block, step) points of the trained "
        f"arms (seed means): Spearman ρ = {a.rho:.2f}, 95% bootstrap interval [{a.low:.2f}, {a.high:.2f}] "
        f"(resampling points, which treats neighbouring steps of a block as independent). {metric} spans "
        f"{p[metric].min():.3f}–{p[metric].max():.3f} while Δloss spans {p['dloss'].min():.4f}–"
        f"{p['dloss'].max():.4f} nats/token."
    )


def table_rows(a: Association, metric: str = "r2_lin") -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """(header, rows): every point, sorted by Δloss."""
    header = ("arm", "block", "step", metric, "Δloss (nats)")
    rows = [
        (r["arm"], str(r["block"]), str(r["step"]), f"{r[metric]:.4f}", f"{r['dloss']:.4f}")
        for r in a.points.sort("dloss").iter_rows(named=True)
    ]
    return header, rows
