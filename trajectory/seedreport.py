"""The report's seed-agreement part: per block, one trained arm's seeds' final values under the one stated rule
(:mod:`trajectory.verdicts.seeds`, the multi-run F rule)."""

from __future__ import annotations

import polars as pl

from .report import Block, Table
from .verdicts.seeds import SEED_RULE, seed_agreement, seed_sentence


def _f(v, d: int = 4) -> str:
    return "—" if v is None else f"{v:.{d}g}" if d < 4 else f"{v:.{d}f}"


def seed_blocks(frame: pl.DataFrame, arm: str, coverage: float, metric: str = "r2_lin") -> list[Block]:
    """The rule, the count of blocks by agreement, and per block the finals, s_T, s_0, p and the answer; nothing
    for an arm with fewer than 2 seeds."""
    table = seed_agreement(frame, arm, metric, coverage)
    if table.is_empty():
        return []
    rows = tuple(
        (
            str(r["block"]),
            str(r["step"]),
            ", ".join(_f(v) for v in r["finals"]),
            _f(r["seeds_sd"]),
            _f(r["init_sd"]),
            _f(r["sd_ratio"], 3),
            _f(r["p"], 2),
            r["agreement"],
        )
        for r in table.iter_rows(named=True)
    )
    header = ("block", "last common step", "finals (by seed)", "s_T", "s_0", "s_T / s_0", "F test p", "seeds' finals")
    return [SEED_RULE, seed_sentence(table, arm), Table(header, rows)]
