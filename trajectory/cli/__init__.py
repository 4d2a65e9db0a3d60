"""The ``trajectory`` command line: a thin layer over the Python API.

Every subcommand is a pair ``add_<name>(parser)`` / ``run_<name>(args)`` (in ``measure``, ``sweep``,
``views``) registered in ``COMMANDS``.  A :class:`~trajectory.errors.TrajectoryError` is printed as one line
on stderr with exit status 2; nothing is written half-way.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager

from ..config import __version__
from ..errors import TrajectoryError, TrajectoryWarning
from .args import PRESETS
from .compress import add_compress, run_compress
from .measure import add_measure, run_measure
from .sweep import add_sweep, run_sweep
from .tokenshares import add_tokens, run_tokens
from .views import (
    add_figures,
    add_report,
    add_results,
    add_verify,
    run_plot,
    run_report,
    run_results,
    run_verify,
)

__all__ = ["COMMANDS", "PRESETS", "build_parser", "main"]

COMMANDS = {
    "measure": (add_measure, run_measure, "R²_lin of every FFN block of one model revision, in one forward pass"),
    "tokens": (
        add_tokens,
        run_tokens,
        "the held-out tokens with the largest non-linear share in one block, with their context",
    ),
    "sweep": (add_sweep, run_sweep, "measure every missing revision of a manifest (or --repo/--revisions), cached"),
    "results": (
        add_results,
        run_results,
        "print or export stored results: a manifest's experiment, or a whole --store",
    ),
    "plot": (
        add_figures,
        run_plot,
        "figures of stored results (a manifest's or a --store's) into figures/<experiment>/",
    ),
    "report": (add_report, run_report, "figures plus report.md and report.html: the verdict per block"),
    "compress": (
        add_compress,
        run_compress,
        "per-block ablations (remove, mean, low-rank, affine), a plan under a loss budget, a smaller model",
    ),
    "verify": (
        add_verify,
        run_verify,
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
    """Inside, every :class:`.TrajectoryWarning` is printed as one ``trajectory: <message>`` line on stderr
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
