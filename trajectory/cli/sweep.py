"""``trajectory sweep``: measure what a manifest's store lacks."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ..config import DEVICES, INIT_SCHEMES, TWIN_CPU_LIMIT_S
from ..errors import ConfigError
from .args import add_companions_argument, add_data_arguments, data_from_args, metric_from_args


def add_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", nargs="?", help="manifests/<name>.toml (or give --repo and --revisions)")
    p.add_argument("--repo", help="quick form: Hub id ORG/NAME or a folder of checkpoint sub-directories")
    p.add_argument("--revisions", help="quick form: comma-separated revisions, e.g. step0,step1,step1000")
    add_data_arguments(p)
    p.add_argument("--store", help="results folder (default: the manifest's [sweep] store; quick form: store/<name>)")
    p.add_argument("--keep-weights", action="store_true", help="keep downloaded weights in the HF cache")
    p.add_argument("--workers", type=int, help="parallel local processes across revisions (default: manifest)")
    p.add_argument("--prefetch", type=int, help="revisions downloaded ahead of the one measured (default: manifest)")
    p.add_argument("--dask", metavar="tcp://HOST:PORT", help="run the units on this Dask scheduler")
    p.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="where models run and the twin trains; auto (default): CUDA when torch sees a GPU, else the CPU",
    )
    p.add_argument(
        "--arms",
        metavar="LIST",
        help="run only these of the manifest's arms, e.g. hub,random-init; a twin named here runs even on a CPU "
        f"where its training would take over {TWIN_CPU_LIMIT_S / 3600:g} h (otherwise it is skipped, with its cost)",
    )
    p.add_argument(
        "--random-init",
        type=int,
        default=0,
        metavar="N",
        help="quick form: also measure N untrained random-init seeds of the architecture",
    )
    p.add_argument(
        "--init",
        choices=INIT_SCHEMES,
        help="quick form: how the random-init seeds are drawn: gpt-neox (GPT-NeoX's small_init/wang_init) or "
        "hf-default (the model's own from_config draw, as for checkpoints trained from from_config); "
        "default: the family's real init",
    )
    add_companions_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def quick_options(args) -> dict[str, bool]:
    """The quick form's evaluation options, and whether each was given: a manifest names its own, so one given
    beside a manifest would be silently ignored."""
    return {
        "--text-file": bool(args.text_file),
        "--parquet": bool(args.parquet),
        "--dataset": bool(args.dataset),
        "--column": args.column != "text",
        "--tokens": args.tokens is not None,
        "--seq-len": args.seq_len is not None,
        "--heldout-frac": args.heldout_frac is not None,
        "--seed": args.seed != 0,
        "--random-init": bool(args.random_init),
        "--init": args.init is not None,
        "--companions": bool(args.companions),
    }


def run_sweep(args) -> int:
    from ..api import checked_sweep
    from ..manifest import load_manifest, quick_manifest
    from ..scheduler import SweepOptions

    if args.manifest and (args.repo or args.revisions):
        raise ConfigError("give a MANIFEST or --repo with --revisions, not both")
    if args.manifest:
        manifest = load_manifest(args.manifest)
        quick = [flag for flag, given in quick_options(args).items() if given]
        if quick:
            raise ConfigError(
                f"{quick[0]} is for the quick form (--repo … --revisions …); with a manifest, set it in the manifest"
            )
        if args.allow_long:
            manifest = replace(manifest, data=replace(manifest.data, allow_long=True))
        if args.store:
            manifest = replace(manifest, store_dir=Path(args.store))
    elif args.repo and args.revisions:
        manifest = quick_manifest(
            args.repo,
            args.revisions.split(","),
            data_from_args(args),
            metric_from_args(args, companions=args.companions),
            args.store,
            random_init=args.random_init,
        )
        manifest = replace(manifest, init_scheme=args.init)  # None: the family's real init
    else:
        raise ConfigError("give a MANIFEST, or --repo ORG/NAME --revisions step0,step1,… with evaluation text")
    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip()) if args.arms else None
    options = SweepOptions(
        keep_weights=args.keep_weights,
        workers=args.workers,
        prefetch=args.prefetch,
        dask=args.dask,
        device=args.device,
        progress=not args.no_progress,
        arms=arms,
    )
    report = checked_sweep(manifest, options)
    print(report.summary())
    return 1 if report.failed else 0
