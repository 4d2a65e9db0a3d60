"""A stand-in arm for tests of processes (workers, signals, concurrent writers): no model, no torch.

Each unit sleeps ``seconds`` (a measurement's stand-in) and gives two rows whose numbers are a function of
the unit alone, so any two runs of a unit must store the same rows.  Run as a script, it sweeps ``n``
units into a store, in ``workers`` loky processes through the real scheduler, or in this process in
the given ``order`` (for two writers at once), then prints which units it measured itself::

    python tests/stubarm.py STORE N SECONDS [--workers W] [--reverse] [--start-after FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trajectory.arms.base import BaseArm, Unit
from trajectory.config import Provenance


def units(n: int) -> list[Unit]:
    """``n`` independent units of a pretend experiment ``stub``."""
    return [
        Unit(Provenance("stub", "local", "m", f"step{i}", i, f"{i:040x}", "d" * 16, "k" * 16), group=f"step{i}")
        for i in range(n)
    ]


class SleepyArm(BaseArm):
    """Plans ``n`` units; ``run`` sleeps, then returns two blocks of numbers derived from the step."""

    arm = "local"

    def __init__(self, n: int, seconds: float) -> None:
        self.n, self.seconds = n, seconds

    def plan(self) -> list[Unit]:
        return units(self.n)

    def run(self, unit: Unit) -> list[dict]:
        time.sleep(self.seconds)
        step = unit.provenance.step
        return [{**unit.provenance.row(), "block": b, "r2_lin": 1 / (2 + step + b), "status": "ok"} for b in range(2)]


def _main() -> None:
    from trajectory.scheduler import SweepOptions, run_arm, run_group
    from trajectory.store import Store

    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("n", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--reverse", action="store_true")
    parser.add_argument("--start-after", type=Path)
    args = parser.parse_args()
    arm, store = SleepyArm(args.n, args.seconds), Store(args.store)
    while args.start_after and not args.start_after.exists():  # both writers start together
        time.sleep(0.01)
    if args.workers > 1:
        outcomes = run_arm(arm, store, SweepOptions(progress=False), args.workers).outcomes
    else:
        todo = arm.plan()[::-1] if args.reverse else arm.plan()
        outcomes = run_group(arm, todo, args.store)
    print(json.dumps(sorted(o.label for o in outcomes if o.status == "done")), flush=True)


if __name__ == "__main__":
    _main()
