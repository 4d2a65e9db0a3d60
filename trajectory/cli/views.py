"""What reads a store: ``results``, ``verify``, ``plot`` and ``report``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import Manifest
from ..errors import ConfigError, TrajectoryError
from .args import add_store_arguments


def add_results(p: argparse.ArgumentParser) -> None:
    add_store_arguments(p, "its experiment's rows")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", metavar="F", help="write every stored row as CSV ('-': standard output)")
    out.add_argument(
        "--json", metavar="F", nargs="?", const="-", help="write every stored row as a JSON array (default: stdout)"
    )
    out.add_argument("--parquet", metavar="F", help="write every stored row as parquet")


def run_results(args) -> int:
    from ..api import results

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

    from ..manifest import load_manifest

    if args.manifest:
        manifest = load_manifest(args.manifest)
        return dataclasses.replace(manifest, store_dir=Path(args.store)) if args.store else manifest
    if not args.store:
        raise ConfigError(f"give a MANIFEST or --store DIR to {args.command}")
    from ..stored import stored_experiment

    return stored_experiment(args.store, getattr(args, "experiment", None))


def _check_output_file(path: str, option: str) -> None:
    """``path`` must name a file (not a folder) in a folder that can be written; nothing is created."""
    from ..atomic import writable_folder

    if Path(path).is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name")
    writable_folder(Path(path).parent, f"{option} {path}: its folder")


def _export(frame, path: Path, kind: str) -> None:
    """Write ``frame`` to ``path`` as ``kind`` (csv, json, parquet) atomically: a failed write leaves no file."""
    from ..atomic import atomic_write

    write = {"csv": frame.write_csv, "json": frame.write_json, "parquet": frame.write_parquet}[kind]
    try:
        atomic_write(path, write)
    except OSError as exc:
        raise TrajectoryError(f"cannot write {path}: {exc.strerror or exc}") from None


def add_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", nargs="?", help="manifests/<name>.toml (also checks staleness and missing units)")
    p.add_argument("--store", help="the store folder (default: the manifest's [sweep] store)")


def run_verify(args) -> int:
    """Exit 0 when nothing is wrong, 1 when something is (the first line says how much)."""
    from ..manifest import load_manifest
    from ..verify import verify_store

    manifest = load_manifest(args.manifest) if args.manifest else None
    if manifest is None and not args.store:
        raise TrajectoryError("give a MANIFEST or --store DIR to verify")
    result = verify_store(args.store or manifest.store_dir, manifest)
    print("\n".join(result.lines()))
    return 0 if result.ok else 1


FIGURE_METRICS = ("r2_lin", "r2_lin_inf", "r2_lin_global", "r2_median_dim")  # what --metric may name


def add_figures(p: argparse.ArgumentParser, many: str = "") -> None:
    add_store_arguments(p, "reads its store only; nothing is measured", many)
    p.add_argument("--experiment", metavar="NAME", help="with --store alone: which experiment, when it holds several")
    p.add_argument("--out", metavar="DIR", help="output folder (default: figures/<experiment name>/)")
    p.add_argument("--data-hash", help="which evaluation to use when the store holds several (default: the largest)")
    p.add_argument("--metric", default="r2_lin", choices=FIGURE_METRICS, help="the metric drawn and judged")


def add_report(p: argparse.ArgumentParser) -> None:
    add_figures(
        p,
        many="two or more manifests over one architecture and evaluation: one report of their trained runs, the "
        "trained band beside the random-init band (default --out figures/<their names>/)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the verdict per arm, block and seed (several manifests: the comparison) as JSON, no files",
    )
    p.add_argument(
        "--against",
        nargs="+",
        metavar="MANIFEST",
        help="a second group of runs (e.g. PolyPythia's weight seeds against the data seeds given first): per "
        "block, which group's final values spread further, by an F test (docs/suites.md)",
    )


def _figured(args):
    """The manifest (or what a store alone records, its steps discovered) of ``plot`` and ``report``."""
    from ..store import with_discovered_schedule

    manifest = _experiment(args)
    return with_discovered_schedule(manifest) if isinstance(manifest, Manifest) else manifest


def _figures(args):
    from ..atomic import writable_folder
    from ..plots import context_from, plot_all
    from ..report import read_experiment

    manifest = _figured(args)
    out = writable_folder(args.out or Path("figures") / manifest.name, "--out")
    frame, ignored, failures = read_experiment(manifest, args.data_hash)
    drawn = plot_all(frame, context_from(manifest, frame, args.metric), out)
    return manifest, frame, ignored, failures, out, drawn


def run_plot(args) -> int:
    *_, drawn = _figures(args)
    for d in drawn:
        if d.paths:
            print(" ".join(str(p) for p in d.paths))
        else:
            print(f"trajectory: {d.name} not drawn: {d.skipped}", file=sys.stderr)
    return 0


def run_report(args) -> int:
    from ..report import read_experiment, verdict_json, write_report

    if args.against:
        return _report_groups(args)
    if len(args.manifest) > 1:
        return _report_runs(args)
    args.manifest = args.manifest[0] if args.manifest else None
    if args.json:  # the verdict table only: no figures, no files
        manifest = _figured(args)
        print(json.dumps(verdict_json(read_experiment(manifest, args.data_hash)[0], manifest, args.metric)))
        return 0
    manifest, frame, ignored, failures, out, drawn = _figures(args)
    for path in write_report(frame, manifest, out, drawn, failures, ignored, args.metric):
        print(path)
    return 0


def _report_groups(args) -> int:
    """``report A.toml B.toml … --against C.toml D.toml …``: each group's multi-run report, then per block which
    group's final values spread further (:mod:`trajectory.verdicts.groups`)."""
    from ..multireport import write_groups_report

    if len(args.manifest) < 2 or len(args.against) < 2:
        raise ConfigError("report … --against …: each group needs at least 2 manifests")
    for path in write_groups_report(args.manifest, args.against, args.data_hash, args.metric, args.out, args.json):
        print(path)
    return 0


def _report_runs(args) -> int:
    """``report A.toml B.toml …``: the experiments' trained runs in one report (:mod:`trajectory.multireport`)."""
    from ..atomic import writable_folder
    from ..experiments import compare, default_name, read_experiments
    from ..manifest import load_manifest
    from ..multireport import draw, runs_json, write_runs_report

    if args.store or args.experiment:
        raise ConfigError("--store and --experiment read one experiment; several manifests each read their own store")
    exps = read_experiments([load_manifest(m) for m in args.manifest], args.data_hash, args.metric)
    cmp = compare(exps)
    if args.json:
        print(json.dumps(runs_json(exps, cmp)))
        return 0
    out = writable_folder(args.out or Path("figures") / default_name(exps.names), "--out")
    for path in write_runs_report(exps, cmp, out, draw(exps, cmp, out)):
        print(path)
    return 0
