"""Sentences and records that follow from the verdict table under the stated rules (:mod:`trajectory.verdicts`).

Every sentence here is computed from a :func:`~trajectory.verdicts.table.verdict_table`; none adds a claim
the table does not hold.  :func:`records` is the JSON form (``trajectory report --json``).
"""

from __future__ import annotations

import math

import polars as pl

from ..config import arm_label
from .band import prediction_half_width
from .exits import MIN_FRACTION, MIN_POINTS, VERDICTS
from .frame import BAND_ARM, init_of, usable


def band_sentence(table: pl.DataFrame, coverage: float, metric: str = "r2_lin") -> str:
    """What the band is, with its t quantile and width in sd for the number of seeds the store holds."""
    seeds = sorted({int(n) for n in table["band_seeds"].drop_nulls().to_list()})
    widths = [
        f"{n} seeds: mean ± t({0.5 + coverage / 2:.3f}, {n - 1}) · sd · √(1 + 1/{n}) = mean ± "
        f"{prediction_half_width(1.0, n, coverage):.2f} sd"
        for n in seeds
        if n >= 2
    ]
    return (
        f"Band: the {coverage:.0%} prediction interval of `{metric}` for one new random-init draw, per block ("
        + ("; ".join(widths) or "fewer than 2 seeds: no band")
        + ")."
    )


RULE = (
    "Rule: the first exit is the first measured step strictly outside the band; the peak is the largest value; "
    "the persistent exit is the first step of the tail of measured points that all lie outside on the side of the "
    f"last one, and it holds when that tail has ≥ {MIN_POINTS} points and spans ≥ {MIN_FRACTION:.0%} of training. "
    "A seed is learned-above / learned-below when its persistent exit holds and starts after step 0, within-band "
    "when its last measured value is inside the band, and undetermined otherwise (the exit does not hold yet, it "
    "holds from step 0 on, or from the first measured step on when step 0 was not measured, no band, or step 0 "
    "outside its band). A block's verdict is its seeds' when they all "
    "agree, else undetermined."
)


def counts(table: pl.DataFrame) -> dict[str, int]:
    """How many blocks have each verdict (one verdict per block)."""
    per_block = table.group_by("block").agg(pl.col("verdict").first())
    return {v: per_block.filter(pl.col("verdict") == v).height for v in VERDICTS}


def arm_sentence(table: pl.DataFrame, arm: str) -> str:
    """The verdict in numbers for one arm: the count of each verdict, and the seeds it rests on."""
    n_blocks = table["block"].n_unique()
    c = counts(table)
    seeds = sorted({s for s in table["seed"].drop_nulls().to_list()})
    parts = ", ".join(f"{c[v]} {v}" for v in VERDICTS if c[v])
    on = f"{len(seeds)} trained seeds, {', '.join(map(str, seeds))}" if len(seeds) > 1 else "one trained seed"
    return f"{arm_label(arm)}: of {n_blocks} blocks, {parts or 'none measured'} ({on})."


def metric_shift_sentences(shift: pl.DataFrame, base: str = "r2_lin", other: str = "r2_lin_inf") -> list[str]:
    """How much the finite-sample correction moves the verdict, per arm (from :func:`.compare_metrics`)."""
    if shift.drop_nulls(f"final_{other}").is_empty():
        return [f"`{other}` is not in the store (rows measured before it existed), so it is not compared."]
    out = []
    for (arm,), g in shift.group_by("arm", maintain_order=True):
        defined = g.drop_nulls(f"final_{other}")
        if defined.is_empty():
            out.append(f"{arm_label(arm)}: `{other}` is not in the store; not compared.")
            continue
        moved = (defined[f"final_{other}"] - defined[f"final_{base}"]).to_list()
        changed = g.filter(pl.col("changed"))
        listed = "; ".join(
            f"block {r['block']}: {r[f'verdict_{base}']} → {r[f'verdict_{other}']}"
            for r in changed.iter_rows(named=True)
        )
        out.append(
            f"{arm_label(arm)}: with `{other}` in place of `{base}` (each against its own random-init band), "
            f"{changed.height} of {g.height} block verdicts change" + (f" ({listed})" if listed else "")
            + f"; the final value moves by {min(moved):+.4f} to {max(moved):+.4f}."
        )  # fmt: skip
    return out


def interval_cells(frame: pl.DataFrame, arm: str) -> dict[tuple[int, int, int], str]:
    """``(block, seed, step) → "mean [low, high]"`` of the k-fold companion, where the store has it."""
    if "r2_lin_cv" not in frame.columns:
        return {}
    rows = usable(frame.filter(pl.col("arm") == arm), "r2_lin_cv").with_columns(pl.col("seed").fill_null(0))
    return {
        (
            r["block"],
            r["seed"],
            r["step"],
        ): f"{r['r2_lin_cv']:.4f} [{r['r2_lin_cv_low']:.4f}, {r['r2_lin_cv_high']:.4f}]"
        for r in rows.iter_rows(named=True)
        if r["r2_lin_cv_low"] is not None and r["r2_lin_cv_high"] is not None
    }


def init_names(frame: pl.DataFrame) -> str:
    """The initialisations the random-init rows name in their commits (``init:<scheme>/config:<hash>``)."""
    names = sorted({n for n in map(init_of, frame.filter(pl.col("arm") == BAND_ARM)["commit"].to_list()) if n})
    return f"init {', '.join(f'`{n}`' for n in names)}" if names else "none in the store"


def _clean(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def records(table: pl.DataFrame) -> list[dict]:
    """One JSON-ready object per (arm, block, seed) row: every column, NaN as None, and ``warnings`` a list."""
    rows = []
    for r in table.iter_rows(named=True):
        warning = r.pop("warning", None)
        rows.append({**{k: _clean(v) for k, v in r.items()}, "warnings": [warning] if warning else []})
    return rows


def as_json(table: pl.DataFrame, experiment: str, metric: str, coverage: float) -> dict:
    """The verdict table as one JSON object: the band's definition, the rule, the warnings and :func:`records`."""
    return {
        "experiment": experiment,
        "metric": metric,
        "band": {
            "coverage": coverage,
            "definition": "mean ± t(1 − α/2, S − 1) · sd · √(1 + 1/S) over the S random-init seeds",
        },
        "rule": RULE,
        "warnings": sorted({w for w in table["warning"].to_list() if w}),
        "blocks": records(table),
    }


def evaluation_sentence(frame: pl.DataFrame) -> str:
    """The documents the evaluation windows come from, as the rows record them (trajectory.engine.measure)."""
    cols = ("eval_documents", "eval_max_doc_share", "heldout_documents")
    facts = frame.select(cols).drop_nulls().unique() if all(c in frame.columns for c in cols) else frame.clear()
    if facts.height != 1:
        return "the rows do not record the documents of their windows (measured before they did)."
    n, share, held = facts.row(0)
    return (
        f"the windows come from {n} documents (the largest holds {share:.1%} of the tokens), split by document: "
        f"{held} held out, {n - held} train."
    )


#: The rule by which the report reads the token tail's concentration (docs/tokens.md).
TAIL_RULE = (
    "Tail concentration is the share of a block's held-out SSE on its top 1% of tokens (token_tail_top1). "
    "Rule: the last step is read as more (less) concentrated than at init only when it lies above (below) "
    "every random-init draw of that block; otherwise it is within the draws."
)

#: The columns of :func:`token_tail_rows`.
TAIL_HEADER = ("block", "random init: mean (range, draws)", "first step", "last step", "the last step is")


def token_tail_rows(frame: pl.DataFrame, arm: str, metric: str = "token_tail_top1") -> list[tuple[str, ...]]:
    """Per block: the random-init draws (mean, range, count), ``arm`` at its first and last measured step,
    and what the last step shows under :data:`TAIL_RULE`; empty when the store holds no token tail."""
    if metric not in frame.columns:
        return []
    init = usable(frame.filter(pl.col("arm") == BAND_ARM), metric).group_by("block").agg(
        pl.col(metric).mean().alias("mean"), pl.col(metric).min().alias("low"),
        pl.col(metric).max().alias("high"), pl.len().alias("n"))  # fmt: skip
    trained = usable(frame.filter(pl.col("arm") == arm), metric).group_by("block", "step").agg(pl.col(metric).mean())
    out = []
    for block in sorted(set(trained["block"].to_list())):
        mine = trained.filter(pl.col("block") == block).sort("step")
        first, last = mine.row(0, named=True), mine.row(-1, named=True)
        draws = init.filter(pl.col("block") == block)
        d = draws.row(0, named=True) if len(draws) else None
        shows = "no random-init draws" if d is None else (
            "more concentrated than every draw" if last[metric] > d["high"] else
            "less concentrated than every draw" if last[metric] < d["low"] else "within the draws")  # fmt: skip
        cells = f"{d['mean']:.4f} ({d['low']:.4f}–{d['high']:.4f}, {d['n']})" if d else "—"
        out.append(
            (
                str(block),
                cells,
                f"{first[metric]:.4f} at {first['step']}",
                f"{last[metric]:.4f} at {last['step']}",
                shows,
            )
        )
    return out
