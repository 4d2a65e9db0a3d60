"""Options shared by several commands: evaluation text, the window budget, the split, a store."""

from __future__ import annotations

import argparse

from ..config import DEFAULT_HELDOUT_FRAC, DEFAULT_SEQ_LEN, DEFAULT_TOKENS, DataSpec, MetricConfig
from ..errors import ConfigError

PRESETS = {
    # The paper's protocol (arXiv 2606.19379): WikiText-2 raw train, 128-token
    # windows, 15k tokens, the last 20% of windows held out.
    "paper": dict(
        dataset="Salesforce/wikitext:wikitext-2-raw-v1/train-00000-of-00001.parquet",
        column="text",
        tokens=15_000,
        seq_len=128,
        heldout_frac=0.2,
        split="tail",
    ),
}


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The evaluation-text options shared by ``measure`` and ``sweep``."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text-file", metavar="F", help="UTF-8 text; documents separated by blank lines")
    src.add_argument("--parquet", metavar="F", help="local parquet file (with --column)")
    src.add_argument("--dataset", metavar="REPO:PATH", help="parquet file of a Hub dataset repo")
    p.add_argument("--column", default="text", help="text column of --parquet/--dataset (default: text)")
    p.add_argument(
        "--tokens", type=int, default=None, help=f"evaluation tokens, train + held-out (default {DEFAULT_TOKENS})"
    )
    p.add_argument("--seq-len", type=int, default=None, help=f"window length in tokens (default {DEFAULT_SEQ_LEN})")
    p.add_argument(
        "--heldout-frac", type=float, default=None, help=f"share of windows held out (default {DEFAULT_HELDOUT_FRAC})"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/held-out split (default 0)")
    p.add_argument(
        "--allow-long",
        action="store_true",
        help="allow windows longer than a rotary model's max_position_embeddings (positions it never trained on)",
    )


def data_from_args(args) -> DataSpec:
    """The evaluation data the options name, with the window budget (defaults: :mod:`trajectory.config`)."""
    tokens = DEFAULT_TOKENS if args.tokens is None else args.tokens
    seq_len = DEFAULT_SEQ_LEN if args.seq_len is None else args.seq_len
    for kind, path in (("text", args.text_file), ("parquet", args.parquet), ("dataset", args.dataset)):
        if path:
            return DataSpec(kind, path, args.column, tokens, seq_len, args.allow_long)
    raise ConfigError("give evaluation text: --text-file F, --parquet F --column C or --dataset REPO:PATH")


def add_companions_argument(p: argparse.ArgumentParser) -> None:
    """``--companions LIST``: the companion metrics to compute beside R²_lin (``measure`` and the quick sweep)."""
    p.add_argument(
        "--companions",
        default="",
        metavar="LIST",
        help="also compute companion metrics, comma-separated: linearity_score (secretly-linear "
        "score of h_l→h_l+1), effective_rank, ci (k-fold mean and its 95%% interval), swap (Δloss when the "
        "FFN is replaced by its affine fit), remove (Δloss when it outputs 0), lowrank (smallest rank within "
        "lowrank_tol nats), token_tail (per-token residual shares and the SSE's tail concentration, "
        "docs/tokens.md); or 'all'",
    )


def metric_from_args(args, **extra) -> MetricConfig:
    frac = DEFAULT_HELDOUT_FRAC if args.heldout_frac is None else args.heldout_frac
    return MetricConfig(heldout_frac=frac, seed=args.seed, **extra)


def apply_preset(args) -> None:
    """Fill the options a preset sets and the user did not."""
    preset = PRESETS.get(getattr(args, "preset", None) or "", {})
    for key, value in preset.items():
        if key in ("dataset", "column") and (args.text_file or args.parquet):
            continue
        if getattr(args, key, None) in (None, "text"):
            setattr(args, key, value)
    args.split = preset.get("split", "random")


def add_store_arguments(p: argparse.ArgumentParser, what: str, many: str = "") -> None:
    """``MANIFEST`` and/or ``--store DIR``: what ``results``, ``plot`` and ``report`` read; ``many`` (a help
    text) lets several manifests be given."""
    p.add_argument(
        "manifest",
        nargs="*" if many else "?",
        help=f"manifests/<name>.toml ({what}; or give --store DIR)" + (f"; {many}" if many else ""),
    )
    p.add_argument(
        "--store",
        metavar="DIR",
        help="the store folder (default: the manifest's [sweep] store); alone, the store is read without a "
        "manifest, e.g. after a quick-form `sweep --repo … --store DIR`",
    )
