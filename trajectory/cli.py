"""The ``trajectory`` command line: a thin layer over the Python API.

Every subcommand is a pair ``_add_<name>(parser)`` / ``_run_<name>(args)``
registered in ``COMMANDS``.  A :class:`TrajectoryError` is printed as one line
on stderr with exit status 2; nothing is written half-way.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from .config import (
    DEFAULT_HELDOUT_FRAC,
    DEFAULT_SEQ_LEN,
    DEFAULT_TOKENS,
    DEVICES,
    TWIN_CPU_LIMIT_S,
    DataSpec,
    Manifest,
    MetricConfig,
    __version__,
)
from .errors import ConfigError, TrajectoryError, TrajectoryWarning
from .tables import format_blocks

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


def metric_from_args(args, **extra) -> MetricConfig:
    frac = DEFAULT_HELDOUT_FRAC if args.heldout_frac is None else args.heldout_frac
    return MetricConfig(heldout_frac=frac, seed=args.seed, **extra)


def _apply_preset(args) -> None:
    """Fill the options a preset sets and the user did not."""
    preset = PRESETS.get(getattr(args, "preset", None) or "", {})
    for key, value in preset.items():
        if key in ("dataset", "column") and (args.text_file or args.parquet):
            continue
        if getattr(args, key, None) in (None, "text"):
            setattr(args, key, value)
    args.split = preset.get("split", "random")


def _add_measure(p: argparse.ArgumentParser) -> None:
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
    p.add_argument(
        "--companions",
        default="",
        metavar="LIST",
        help="also compute companion metrics, comma-separated: linearity_score (secretly-linear "
        "score of h_l→h_l+1), effective_rank, ci (k-fold mean and its 95%% interval), swap (Δloss when the "
        "FFN is replaced by its affine fit); or 'all'",
    )
    p.add_argument(
        "--precision",
        default="mixed",
        choices=["mixed", "float64", "float32"],
        help="dtypes of the per-batch products, all summed in float64: mixed (default) = XᵀX in "
        "float64, XᵀY in float32; float64 = both float64 (slower, exact to rounding); float32 = "
        "both float32 (wrong on ill-conditioned inputs)",
    )


def _run_measure(args) -> int:
    from .api import finite_or_null, measure_revision

    _apply_preset(args)
    cfg = metric_from_args(args, split=args.split, companions=args.companions, compute_dtype=args.precision)
    result = measure_revision(args.model, args.revision, data_from_args(args), cfg, args.device)
    result["blocks"] = finite_or_null(result["blocks"])
    print(json.dumps(result) if args.json else format_blocks(result))
    bad = [b["block"] for b in result["blocks"] if b.get("status", "ok") != "ok"]
    if bad:  # the rows are printed, flagged; the exit status says not every block has a number
        print(f"trajectory: blocks {bad} have no R²_lin: {result['blocks'][bad[0]]['status']}", file=sys.stderr)
    return 1 if bad else 0


def _add_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", nargs="?", help="manifests/<name>.toml (or give --repo and --revisions)")
    p.add_argument("--repo", help="quick form: Hub id ORG/NAME or a folder of checkpoint sub-directories")
    p.add_argument("--revisions", help="quick form: comma-separated revisions, e.g. step0,step1,step1000")
    add_data_arguments(p)
    p.add_argument("--store", help="results folder (quick form; default store/<name>)")
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_sweep(args) -> int:
    from .api import checked_sweep
    from .manifest import load_manifest, quick_manifest
    from .scheduler import SweepOptions

    if args.manifest and (args.repo or args.revisions):
        raise ConfigError("give a MANIFEST or --repo with --revisions, not both")
    if args.manifest:
        manifest = load_manifest(args.manifest)
        if args.allow_long:
            manifest = replace(manifest, data=replace(manifest.data, allow_long=True))
    elif args.repo and args.revisions:
        manifest = quick_manifest(
            args.repo,
            args.revisions.split(","),
            data_from_args(args),
            metric_from_args(args),
            args.store,
            random_init=args.random_init,
        )
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


def add_store_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """``MANIFEST`` and/or ``--store DIR``: what ``results``, ``plot`` and ``report`` read."""
    p.add_argument("manifest", nargs="?", help=f"manifests/<name>.toml ({what}; or give --store DIR)")
    p.add_argument(
        "--store",
        metavar="DIR",
        help="the store folder (default: the manifest's [sweep] store); alone, the store is read without a "
        "manifest, e.g. after a quick-form `sweep --repo … --store DIR`",
    )


def _add_results(p: argparse.ArgumentParser) -> None:
    add_store_arguments(p, "its experiment's rows")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", metavar="F", help="write every stored row as CSV ('-': standard output)")
    out.add_argument(
        "--json", metavar="F", nargs="?", const="-", help="write every stored row as a JSON array (default: stdout)"
    )
    out.add_argument("--parquet", metavar="F", help="write every stored row as parquet")


def _run_results(args) -> int:
    from .api import results

    if args.parquet == "-":
        raise ConfigError("parquet is binary: give --parquet a file name, or use --csv - / --json")
    target = args.csv or args.json or args.parquet
    kind = "csv" if args.csv else "json" if args.json else "parquet"
    if target and target != "-":
        _check_output_file(target, f"--{kind}")
    # a manifest: its experiment's rows (from --store when given); --store alone: every row of the store
    frame = results(_experiment(args) if args.manifest or not args.store else args.store)
    if target == "-" and kind == "csv":
        frame.write_csv(sys.stdout)
    elif target == "-":
        print(frame.write_json())  # a flagged block's NaN is written as null: strict JSON
    elif target:
        _export(frame, Path(target), kind)
    else:
        import polars as pl

        cols = ["arm", "seed", "revision", "step", "block", "r2_lin", "r2_lin_global", "n_train", "n_test"]
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, float_precision=4):
            print(frame.select(cols))
    where = "standard output" if target == "-" else target
    print(f"{frame.height} rows" + (f" written to {where}" if target else ""), file=sys.stderr)
    return 0


def _experiment(args):
    """The manifest (its store replaced by ``--store``), or with ``--store`` alone what the store records."""
    import dataclasses

    from .manifest import load_manifest

    if args.manifest:
        manifest = load_manifest(args.manifest)
        return dataclasses.replace(manifest, store_dir=Path(args.store)) if args.store else manifest
    if not args.store:
        raise ConfigError(f"give a MANIFEST or --store DIR to {args.command}")
    from .stored import stored_experiment

    return stored_experiment(args.store, getattr(args, "experiment", None))


def _check_output_file(path: str, option: str) -> None:
    """``path`` must name a file (not a folder) in a folder that can be written; nothing is created."""
    from .atomic import writable_folder

    if Path(path).is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name")
    writable_folder(Path(path).parent, f"{option} {path}: its folder")


def _export(frame, path: Path, kind: str) -> None:
    """Write ``frame`` to ``path`` as ``kind`` (csv, json, parquet) atomically: a failed write leaves no file."""
    from .atomic import atomic_write

    write = {"csv": frame.write_csv, "json": frame.write_json, "parquet": frame.write_parquet}[kind]
    try:
        atomic_write(path, write)
    except OSError as exc:
        raise TrajectoryError(f"cannot write {path}: {exc.strerror or exc}") from None


def _add_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", nargs="?", help="manifests/<name>.toml (also checks staleness and missing units)")
    p.add_argument("--store", help="the store folder (default: the manifest's [sweep] store)")


def _run_verify(args) -> int:
    """Exit 0 when nothing is wrong, 1 when something is (the first line says how much)."""
    from .manifest import load_manifest
    from .verify import verify_store

    manifest = load_manifest(args.manifest) if args.manifest else None
    if manifest is None and not args.store:
        raise TrajectoryError("give a MANIFEST or --store DIR to verify")
    result = verify_store(args.store or manifest.store_dir, manifest)
    print("\n".join(result.lines()))
    return 0 if result.ok else 1


FIGURE_METRICS = ("r2_lin", "r2_lin_inf", "r2_lin_global", "r2_median_dim")  # what --metric may name


def _add_figures(p: argparse.ArgumentParser) -> None:
    add_store_arguments(p, "reads its store only; nothing is measured")
    p.add_argument("--experiment", metavar="NAME", help="with --store alone: which experiment, when it holds several")
    p.add_argument("--out", metavar="DIR", help="output folder (default: figures/<experiment name>/)")
    p.add_argument("--data-hash", help="which evaluation to use when the store holds several (default: the largest)")
    p.add_argument("--metric", default="r2_lin", choices=FIGURE_METRICS, help="the metric drawn and judged")


def _add_report(p: argparse.ArgumentParser) -> None:
    _add_figures(p)
    p.add_argument("--json", action="store_true", help="print the verdict per arm, block and seed as JSON, no files")


def _figured(args):
    """The manifest (or what a store alone records, its steps discovered) of ``plot`` and ``report``."""
    from .store import with_discovered_schedule

    manifest = _experiment(args)
    return with_discovered_schedule(manifest) if isinstance(manifest, Manifest) else manifest


def _figures(args):
    from .atomic import writable_folder
    from .plots import context_from, plot_all
    from .report import read_experiment

    manifest = _figured(args)
    out = writable_folder(args.out or Path("figures") / manifest.name, "--out")
    frame, ignored, failures = read_experiment(manifest, args.data_hash)
    drawn = plot_all(frame, context_from(manifest, frame, args.metric), out)
    return manifest, frame, ignored, failures, out, drawn


def _run_plot(args) -> int:
    *_, drawn = _figures(args)
    for d in drawn:
        if d.paths:
            print(" ".join(str(p) for p in d.paths))
        else:
            print(f"trajectory: {d.name} not drawn: {d.skipped}", file=sys.stderr)
    return 0


def _run_report(args) -> int:
    from .report import read_experiment, verdict_json, write_report

    if args.json:  # the verdict table only: no figures, no files
        manifest = _figured(args)
        print(json.dumps(verdict_json(read_experiment(manifest, args.data_hash)[0], manifest, args.metric)))
        return 0
    manifest, frame, ignored, failures, out, drawn = _figures(args)
    for path in write_report(frame, manifest, out, drawn, failures, ignored, args.metric):
        print(path)
    return 0


COMMANDS = {
    "measure": (_add_measure, _run_measure, "R²_lin of every FFN block of one model revision, in one forward pass"),
    "sweep": (_add_sweep, _run_sweep, "measure every missing revision of a manifest (or --repo/--revisions), cached"),
    "results": (
        _add_results,
        _run_results,
        "print or export stored results: a manifest's experiment, or a whole --store",
    ),
    "plot": (
        _add_figures,
        _run_plot,
        "figures of stored results (a manifest's or a --store's) into figures/<experiment>/",
    ),
    "report": (_add_report, _run_report, "figures plus report.md and report.html: the verdict per block"),
    "verify": (
        _add_verify,
        _run_verify,
        "check every stored row against its provenance: stale, duplicated, missing, unreadable",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trajectory",
        description="Track how linear a transformer's FFN blocks are across training (R²_lin).",
        epilog="Start with `make sweep` (the offline demo: random-init band vs a trained twin) or "
        "`trajectory measure MODEL --text-file F`. `trajectory COMMAND --help` explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"trajectory {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add, run, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
        p.set_defaults(_run=run)
    return parser


@contextmanager
def one_line_warnings():
    """Inside, every :class:`TrajectoryWarning` is printed as one ``trajectory: <message>`` line on stderr
    (each time it occurs); other warnings are shown as Python shows them."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, TrajectoryWarning):
            print(f"trajectory: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", TrajectoryWarning)
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with one_line_warnings():
            return args._run(args)
    except TrajectoryError as exc:
        print(f"trajectory: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("trajectory: interrupted; finished results are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
