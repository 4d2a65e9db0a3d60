"""``trajectory measure``: R²_lin of every block of one model revision."""

from __future__ import annotations

import argparse
import json
import sys

from .args import PRESETS, add_companions_argument, add_data_arguments, apply_preset, data_from_args, metric_from_args
from .tables import format_blocks


def add_measure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="Hub id (ORG/NAME) or local model directory")
    p.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    add_data_arguments(p)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a published protocol's data and split")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the forward pass runs")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead of a table (r2_inf in the table is r2_lin_inf: R²_lin extrapolated "
        "to unlimited train rows)",
    )
    add_companions_argument(p)
    p.add_argument(
        "--precision",
        default="mixed",
        choices=["mixed", "float64", "float32"],
        help="dtypes of the per-batch products, all summed in float64: mixed (default) = XᵀX in "
        "float64, XᵀY in float32; float64 = both float64 (slower, exact to rounding); float32 = "
        "both float32 (wrong on ill-conditioned inputs)",
    )


def run_measure(args) -> int:
    from ..api import finite_or_null, measure_revision

    apply_preset(args)
    cfg = metric_from_args(args, split=args.split, companions=args.companions, compute_dtype=args.precision)
    result = measure_revision(args.model, args.revision, data_from_args(args), cfg, args.device)
    result["blocks"] = finite_or_null(result["blocks"])
    print(json.dumps(result) if args.json else format_blocks(result))
    bad = [b["block"] for b in result["blocks"] if b.get("status", "ok") != "ok"]
    if bad:  # the rows are printed, flagged; the exit status says not every block has a number
        print(f"trajectory: blocks {bad} have no R²_lin: {result['blocks'][bad[0]]['status']}", file=sys.stderr)
    return 1 if bad else 0
