"""The arms of an experiment.  Each one turns a manifest into units (:meth:`.ArmRunner.plan`) and a unit into rows
(:meth:`.ArmRunner.run`); :mod:`trajectory.scheduler` runs them, skips what is stored and records what fails.

* :mod:`.checkpoints`: ``hub`` and ``local``, a model's saved checkpoints;
* :mod:`.random_init`: untrained draws of the architecture, one unit per seed;
* :mod:`.twin`: the architecture trained by us from random init, one run per seed, measured in the loop
  (:mod:`.training` holds the optimiser and the update).
"""

from __future__ import annotations

from ..config import Arm, Manifest
from .base import ArmRunner, Unit


def make_arm(manifest: Manifest, arm: str, options) -> ArmRunner:
    """The runner of ``arm`` for ``manifest`` under sweep ``options`` (device, retries, keep_weights)."""
    if arm in (Arm.HUB, Arm.LOCAL):
        from .checkpoints import CheckpointArm

        return CheckpointArm(manifest, arm, options)
    if arm == Arm.RANDOM_INIT:
        from .random_init import RandomInitArm

        return RandomInitArm(manifest, options)
    from .twin import TwinArm

    return TwinArm(manifest, options)


__all__ = ["ArmRunner", "Unit", "make_arm"]
