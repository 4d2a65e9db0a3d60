"""What every arm shares: the unit of work, the runner interface, and how a measurement becomes rows.

A :class:`Unit` is one measurement: a :class:`~trajectory.provenance.Provenance` (whose key names its file
in the store) and a ``group``.  Units of one group run in order in one process (the steps of one twin
seed: each continues the training of the one before); different groups are independent and may run in
parallel.  A unit that cannot run at all (a revision missing on the Hub) is planned with ``ready=False``
and the reason, so it is reported beside the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..config import MetricConfig, Provenance


@dataclass(frozen=True)
class Unit:
    """One measurement to make: its provenance, its group, and whether it can run."""

    provenance: Provenance
    group: str = ""
    ready: bool = True
    reason: str = ""
    metric: MetricConfig | None = None  # what the unit is measured with (None: the manifest's [metric])

    @property
    def key(self) -> str:
        return self.provenance.key()

    @property
    def label(self) -> str:
        return self.provenance.label


class ArmRunner(Protocol):
    """An arm: ``plan()`` its units, ``run(unit)`` one of them into rows (raise on failure)."""

    arm: str
    #: True when a failed unit breaks the units after it in its group (a twin run cannot skip a step).
    chained: bool

    def plan(self) -> list[Unit]: ...

    def start(self, pending: list[Unit]) -> None:
        """Called once with the units about to run, in order (e.g. to prefetch)."""

    def run(self, unit: Unit) -> list[dict]: ...

    def close(self) -> None:
        """Called when the arm's units are done or interrupted."""


class BaseArm:
    """Defaults for the optional parts of :class:`ArmRunner`."""

    chained = False

    def start(self, pending: list[Unit]) -> None:
        pass

    def close(self) -> None:
        pass


def metric_fields(metric: MetricConfig) -> dict:
    """A unit's two metric digests: its own (hashed into its key) and its R²_lin's (shared across units)."""
    return {"metric_config": metric.digest(), "metric_core": metric.core().digest()}


def unit_rows(provenance: Provenance, blocks: list[dict], **extra) -> list[dict]:
    """One store row per block: the provenance columns, the block's metrics, then ``extra`` (hash, timings)."""
    base = provenance.row()
    return [{**base, **block, **extra} for block in blocks]
