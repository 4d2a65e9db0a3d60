"""``trajectory tokens``: the held-out tokens that carry a block's non-linearity (:func:`trajectory.api.top_tokens`)."""

from __future__ import annotations

import argparse
import json

from .args import add_data_arguments, data_from_args


def add_tokens(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="Hub id (ORG/NAME) or local model directory")
    p.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    p.add_argument("--block", type=int, required=True, help="the block whose held-out tokens are ranked (0-based)")
    p.add_argument("--top", type=int, default=20, help="how many tokens to list (default 20)")
    p.add_argument("--context", type=int, default=4, help="tokens of context either side (default 4)")
    p.add_argument("--min-count", type=int, default=5, help="per-id means for ids seen at least this often")
    add_data_arguments(p)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the forward passes run")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def run_tokens(args) -> int:
    from ..api import top_tokens
    from ..config import DEFAULT_HELDOUT_FRAC

    result = top_tokens(
        args.model,
        revision=args.revision,
        block=args.block,
        top=args.top,
        data=data_from_args(args),
        heldout_frac=DEFAULT_HELDOUT_FRAC if args.heldout_frac is None else args.heldout_frac,
        seed=args.seed,
        device=args.device,
        context=args.context,
        min_count=args.min_count,
    )
    print(json.dumps(result) if args.json else format_tokens(result))
    return 0


def format_tokens(result: dict) -> str:
    """Two readable tables: the top rows with context, and the per-id means."""
    head = (
        f"{result['model']} @ {result['revision']}  block {result['block']}  data={result['data_hash']}  "
        f"{result['n_test']} held-out tokens; share s_t = ‖r_t‖² / ‖y_t − ȳ‖²"
    )
    lines = [head, f"{'rank':>4} {'share':>9} {'window':>6} {'pos':>4}  context  [token]"]
    for i, r in enumerate(result["tokens"], 1):
        ctx = f"{r['before']!r}[{r['token']!r}]{r['after']!r}"
        lines.append(f"{i:>4} {r['share']:>9.4f} {r['window']:>6} {r['position']:>4}  {ctx}")
    lines.append(f"by token id (seen ≥ min-count times), largest mean share first: {len(result['by_id'])} ids")
    lines.append(f"{'id':>6} {'count':>6} {'mean_share':>10}  token")
    lines += [
        f"{r['token_id']:>6} {r['count']:>6} {r['mean_share']:>10.4f}  {r['token']!r}" for r in result["by_id"][:20]
    ]
    return "\n".join(lines)
