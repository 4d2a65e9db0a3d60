"""What a stored unit is: the arm that measured it and the provenance that decides its numbers.

A leaf (it imports nothing of ``trajectory``): :mod:`trajectory.config` re-exports both, so
``from trajectory.config import Arm, Provenance`` keeps working.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import ClassVar


class Arm(enum.StrEnum):
    """The arms of an experiment.  A ``StrEnum``: ``Arm.HUB == "hub"``, and rows store the plain string."""

    HUB = "hub"  # a model's public checkpoints on the Hugging Face Hub
    LOCAL = "local"  # a folder of checkpoint sub-folders, one per revision
    RANDOM_INIT = "random-init"  # untrained draws of the architecture: its own prior
    TWIN = "twin"  # the architecture trained by us from random init, measured in the loop
    RUN = "run"  # a user's own training run, measured in its loop by trajectory.track (never swept)

    @property
    def label(self) -> str:
        """How figures and the report name the arm."""
        return ARM_LABELS[self]

    @property
    def trained(self) -> bool:
        return self is not Arm.RANDOM_INIT


ARM_LABELS = {
    Arm.HUB: "hub checkpoints",
    Arm.LOCAL: "local checkpoints",
    Arm.TWIN: "twin (our run)",
    Arm.RUN: "tracked run",
    Arm.RANDOM_INIT: "random init",
}
#: Trained arms in the order figures and reports list them.
TRAINED_ARMS = (Arm.HUB, Arm.LOCAL, Arm.TWIN, Arm.RUN)
#: The arms a manifest may name: a sweep measures them (a tracked run is measured by its own training loop).
SWEPT_ARMS = (Arm.HUB, Arm.LOCAL, Arm.RANDOM_INIT, Arm.TWIN)


def arm_label(arm: str) -> str:
    """The label of ``arm``, or ``arm`` itself when it is not a known arm."""
    return ARM_LABELS[Arm(arm)] if arm in Arm._value2member_map_ else str(arm)


@dataclass(frozen=True)
class Provenance:
    """Everything that decides one unit's numbers, and so its store key; every arm builds one of these.

    ``commit`` pins the weights: a Hub commit SHA, a local folder's content hash, ``init:<init>/config:<hash>``
    for a random-init draw (the init scheme and the architecture), ``twin:<digest>`` for a twin run (its
    training spec, seed, architecture, training tokens and precision).  ``data_hash`` is the evaluation
    windows' content hash and ``metric_config`` the :meth:`.MetricConfig.digest` (``metric_core``: the digest
    of the same config without companions, shared by every unit whose R²_lin is comparable).  ``pythia_step`` (the step
    of the reference schedule at the same fraction of training) and ``tokens_seen`` are derived facts,
    stored with the rows but not hashed.
    """

    KEY_FIELDS: ClassVar[tuple[str, ...]] = (
        "experiment", "arm", "model", "seed", "revision", "step", "commit", "data_hash", "metric_config",
    )  # fmt: skip

    experiment: str
    """The experiment's name (the manifest's ``[experiment] name``)."""
    arm: str
    """The arm that measured the unit (:class:`Arm`)."""
    model: str
    """The repo or local folder measured (for an inline config, the experiment's name)."""
    revision: str
    """The checkpoint's name (``step1000``; ``init`` for a random-init draw)."""
    step: int | None
    """The training step the revision stands for (0 for a random-init draw)."""
    commit: str | None
    """What pins the weights: a commit SHA, a folder's content hash, ``init:…/config:…`` or ``twin:<digest>``."""
    data_hash: str
    """Content hash of the evaluation windows."""
    metric_config: str
    """The :meth:`.MetricConfig.digest` of the settings that measured it."""
    seed: int | None = None
    """The draw's or run's seed (random-init and twin; None for a checkpoint)."""
    pythia_step: int | None = None
    """The reference schedule's step at the same fraction of training (derived; not hashed)."""
    tokens_seen: int | None = None
    """Training tokens seen at this step, when known (derived; not hashed)."""
    metric_core: str | None = None
    """The digest of the metric config without companions: units with the same one have comparable R²_lin."""

    def key(self) -> str:
        """24 hex digits of sha256 over :attr:`KEY_FIELDS`: the unit's file name in the store."""
        identity = {name: getattr(self, name) for name in self.KEY_FIELDS}
        identity["arm"] = str(identity["arm"])
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]

    def row(self) -> dict:
        """The provenance columns of every row of the unit (with ``key``)."""
        return {**asdict(self), "arm": str(self.arm), "key": self.key()}

    @classmethod
    def from_row(cls, row: dict) -> Provenance:
        """The provenance a stored row carries (so its key can be recomputed)."""
        return cls(**{f.name: row.get(f.name) for f in fields(cls)})

    @property
    def label(self) -> str:
        """``hub:step1000``, ``twin:step40 seed 1``, ``random-init:seed3``: how summaries name the unit."""
        if self.arm == Arm.RANDOM_INIT:
            return f"{self.arm}:seed{self.seed}"
        return f"{self.arm}:{self.revision}" + ("" if self.seed is None else f" seed {self.seed}")
