"""The readable per-block table that ``trajectory measure`` prints (``--json`` prints the same numbers as JSON).

The core columns always; every companion column that was computed; then, when companions were asked for, a
legend line and one line per reason a companion has no number (``status_<companion>``).
"""

from __future__ import annotations

#: Columns of the readable table: (key, header, width, format); companion columns appear when computed.
TABLE = (
    ("block", "block", 5, "d"),
    ("r2_lin", "r2_lin", 8, ".4f"),
    ("r2_lin_global", "r2_global", 9, ".4f"),
    ("r2_median_dim", "r2_median", 9, ".4f"),
    ("r2_lin_inf", "r2_inf", 8, ".4f"),
    ("n_train", "n_train", 8, "d"),
    ("n_test", "n_test", 7, "d"),
    ("cond", "cond", 9, ".2e"),
    ("rank", "rank", 5, "d"),
    ("linearity_score", "lin_score", 9, ".4f"),
    ("linearity_score_heldout", "lin_held", 8, ".4f"),
    ("linearity_score_nores", "lin_nores", 9, ".4f"),
    ("linearity_score_nores_heldout", "nores_held", 10, ".4f"),
    ("effective_rank", "eff_rank", 8, "d"),
    ("r2_lin_cv", "r2_cv", 7, ".4f"),
    ("r2_lin_cv_low", "cv_low", 7, ".4f"),
    ("r2_lin_cv_high", "cv_high", 7, ".4f"),
    ("swap_loss", "swap_loss", 9, ".4f"),
    ("swap_dloss", "swap_dloss", 10, ".4f"),
    ("swap_dppl", "swap_dppl", 9, ".3f"),
    ("remove_dloss", "rm_dloss", 8, ".4f"),
    ("lowrank_rank", "lr_rank", 7, "d"),
    ("lowrank_dloss", "lr_dloss", 8, ".4f"),
)


def _cell(value, width: int, spec: str) -> str:
    return f"{'—':>{width}}" if value is None else f"{value:>{width}{spec}}"


def format_blocks(result: dict) -> str:
    """A readable per-block table: the core columns and every companion column that was computed."""
    head = f"{result['model']} @ {result['revision']}  data={result['data_hash']}"
    cols = [c for c in TABLE if any(c[0] in b for b in result["blocks"])]
    header = " ".join(f"{name:>{width}}" for _, name, width, _ in cols)
    rows = [
        " ".join(_cell(b.get(key), width, spec) for key, _, width, spec in cols)
        + ("" if b.get("status", "ok") == "ok" else f"  {b['status']}")
        for b in result["blocks"]
    ]
    notes = sorted(
        {f"— {k.removeprefix('status_')}: {v}" for b in result["blocks"] for k, v in b.items() if _why_not(k, v)}
    )
    if not any(k.startswith("status_") for b in result["blocks"] for k in b):
        return "\n".join([head, header, *rows])  # no companions: the table alone
    legend = "r2_inf: R²_lin extrapolated to unlimited train rows" + (
        "; r2_cv [cv_low, cv_high]: the k-fold mean and its 95% interval"
        if any("r2_lin_cv" in b for b in result["blocks"])
        else ""
    )
    return "\n".join([head, header, *rows, legend, *notes])


def _why_not(key: str, value) -> bool:
    """A ``status_<companion>`` entry that says why the companion has no number."""
    return key.startswith("status_") and value != "ok"
