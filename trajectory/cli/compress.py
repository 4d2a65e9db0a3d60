"""``trajectory compress``: per-block ablations, a joint plan under a loss budget, a folder that reloads."""

from __future__ import annotations

import argparse
import json

from ..config import DEFAULT_HELDOUT_FRAC, DEFAULT_SEQ_LEN, DEFAULT_TOKENS
from ..errors import ConfigError


def add_compress(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="Hub id (ORG/NAME) or local model directory")
    p.add_argument("--revision", help="Hub branch, tag or commit, or a checkpoint sub-folder (default: main)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text-file", metavar="F", help="UTF-8 text; documents separated by blank lines")
    src.add_argument(
        "--embedded", nargs="?", const="stdlib", metavar="CORPUS", help="the embedded corpus's evaluation part"
    )
    p.add_argument("--tokenizer", help="tokenizer (Hub id, folder or embedded:VOCAB; default: the model's own)")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help=f"evaluation tokens (default {DEFAULT_TOKENS})")
    p.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN, help=f"window length (default {DEFAULT_SEQ_LEN})")
    p.add_argument(
        "--heldout-frac",
        type=float,
        default=DEFAULT_HELDOUT_FRAC,
        help=f"share of windows held out (default {DEFAULT_HELDOUT_FRAC})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/held-out split (default 0)")
    p.add_argument("--ranks", metavar="LIST", help="ranks of the low-rank maps, e.g. 1,4,16 (default 1,2,4,… and d)")
    p.add_argument("--report", action="store_true", help="print every block × ablation (the default without a budget)")
    p.add_argument(
        "--budget-dloss",
        type=float,
        metavar="X",
        help="choose blocks greedily while the measured joint held-out Δloss stays ≤ X nats",
    )
    p.add_argument("--out", metavar="DIR", help="write the plan's model there (a new folder; needs --budget-dloss)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the forward passes run")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def _ranks(text: str | None):
    if not text:
        return None
    try:
        return tuple(int(r) for r in text.split(","))
    except ValueError:
        raise ConfigError(f"--ranks must be comma-separated integers, got {text!r}") from None


def run_compress(args) -> int:
    from ..api_compress import compress
    from ..compress.folder import jsonable
    from ..compress.table import format_ablations, format_plan

    if not (args.text_file or args.embedded):
        raise ConfigError("give evaluation text: --text-file F or --embedded [CORPUS]")
    table = args.report or args.budget_dloss is None
    result = compress(
        args.model,
        args.tokenizer,
        text_file=args.text_file,
        embedded=args.embedded,
        n_tokens=args.tokens,
        seq_len=args.seq_len,
        heldout_frac=args.heldout_frac,
        seed=args.seed,
        ranks=_ranks(args.ranks),
        budget_dloss=args.budget_dloss,
        table=table,
        out=args.out,
        device=args.device,
        revision=args.revision,
    )
    if args.json:
        rows = result.report.rows if result.report else None
        print(json.dumps(jsonable({"ablations": rows, "plan": result.record}), allow_nan=False))
        return 0
    parts = [format_ablations(result.report)] if result.report else []
    if result.plan is not None:
        parts.append(format_plan(result.plan, args.budget_dloss, result.record["causal"]))
    if result.out is not None:
        parts.append(f"wrote {result.out} (load it with trajectory.load_compressed)")
    print("\n\n".join(parts))
    return 0
