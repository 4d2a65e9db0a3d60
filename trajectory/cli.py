"""The ``trajectory`` command line: a thin layer over the Python API.

Every subcommand is a pair ``_add_<name>(parser)`` / ``_run_<name>(args)``
registered in ``COMMANDS``.  A :class:`TrajectoryError` is printed as one line
on stderr with exit status 2; nothing is written half-way.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import TrajectoryError

PRESETS = {
    # The paper's protocol (arXiv 2606.19379): WikiText-2 raw train, 128-token
    # windows, 15k tokens, the last 20% of windows held out.
    "paper": dict(dataset="Salesforce/wikitext:wikitext-2-raw-v1/train-00000-of-00001.parquet",
                  column="text", tokens=15_000, seq_len=128, heldout_frac=0.2, split="tail"),
}


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The evaluation-text options shared by ``measure`` and ``sweep``."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text-file", metavar="F", help="UTF-8 text; documents separated by blank lines")
    src.add_argument("--parquet", metavar="F", help="local parquet file (with --column)")
    src.add_argument("--dataset", metavar="REPO:PATH", help="parquet file of a Hub dataset repo")
    p.add_argument("--column", default="text", help="text column of --parquet/--dataset (default: text)")
    p.add_argument("--tokens", type=int, default=None, help="evaluation tokens, train + held-out (default 16384)")
    p.add_argument("--seq-len", type=int, default=None, help="window length in tokens (default 128)")
    p.add_argument("--heldout-frac", type=float, default=None, help="share of windows held out (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/held-out split (default 0)")


def text_source_from_args(args):
    from .tokens import TextSource

    if args.text_file:
        return TextSource("text", args.text_file)
    if args.parquet:
        return TextSource("parquet", args.parquet, args.column)
    if args.dataset:
        return TextSource("dataset", args.dataset, args.column)
    raise TrajectoryError("give evaluation text: --text-file F, --parquet F --column C or --dataset REPO:PATH")


def _apply_preset(args) -> None:
    preset = PRESETS.get(getattr(args, "preset", None) or "", {})
    for key, value in preset.items():
        if key in ("dataset", "column") and (args.text_file or args.parquet):
            continue
        if getattr(args, key, None) in (None, "text"):
            setattr(args, key, value)
    args.tokens = args.tokens or 16_384
    args.seq_len = args.seq_len or 128
    args.heldout_frac = args.heldout_frac if args.heldout_frac is not None else 0.2
    args.split = preset.get("split", "random")


def _add_measure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="Hub id (ORG/NAME) or local model directory")
    p.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    add_data_arguments(p)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a published protocol's data and split")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the forward pass runs")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _run_measure(args) -> int:
    from .adapters import adapter_for
    from .loading import load_config, load_model, load_tokenizer
    from .measure import MetricConfig, check_budget, measure_blocks, split_by_sequence
    from .tokens import tokenize_windows

    _apply_preset(args)
    cfg = MetricConfig(heldout_frac=args.heldout_frac, seed=args.seed, split=args.split)
    source = text_source_from_args(args)
    config = load_config(args.model, args.revision)
    adapter_for(config.model_type)  # fail on the architecture before any weights move
    tokens = tokenize_windows(source, load_tokenizer(args.model, args.revision), args.tokens, args.seq_len)
    check_budget(tokens, split_by_sequence(tokens.ids.shape[0], cfg), config.hidden_size)
    model, _ = load_model(args.model, args.revision, device=args.device)
    blocks = measure_blocks(model, tokens, cfg, device=args.device)
    result = {"model": args.model, "revision": args.revision or "main", "data_hash": tokens.data_hash,
              "metric_config": cfg.digest(), "blocks": blocks}
    print(json.dumps(result) if args.json else format_blocks(result))
    return 0


def format_blocks(result: dict) -> str:
    """A readable per-block table."""
    head = f"{result['model']} @ {result['revision']}  data={result['data_hash']}"
    cols = f"{'block':>5} {'r2_lin':>8} {'r2_global':>9} {'r2_median':>9} {'n_train':>8} {'n_test':>7} {'cond':>9} {'rank':>5}"
    rows = [
        f"{b['block']:>5} {b['r2_lin']:>8.4f} {b['r2_lin_global']:>9.4f} {b['r2_median_dim']:>9.4f} "
        f"{b['n_train']:>8} {b['n_test']:>7} {b['cond']:>9.2e} {b['rank']:>5}"
        + ("" if b.get("status", "ok") == "ok" else f"  {b['status']}")
        for b in result["blocks"]
    ]
    return "\n".join([head, cols, *rows])


COMMANDS = {
    "measure": (_add_measure, _run_measure,
                "R²_lin of every FFN block of one model revision, in one forward pass"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trajectory",
        description="Track how linear a transformer's FFN blocks are across training (R²_lin).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add, run, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args._run(args)
    except TrajectoryError as exc:
        print(f"trajectory: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("trajectory: interrupted; finished results are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
