"""Track your own training run: the same store, figures and verdicts as a sweep, written from the loop.

    import trajectory as tj
    tracker = tj.Tracker("store/mine", eval_ids, "dense", total_steps=1000, experiment="mine")
    tracker.step(model, t)                            # in a custom loop (or Lightning), after each update
    tj.TrajectoryCallback.attach(trainer, store="store/mine", eval=eval_ids)  # a transformers Trainer

:mod:`.tracker` measures and writes (:class:`~trajectory.track.tracker.Tracker`); :mod:`.callback` is the
Trainer's callback over it;
:mod:`.undisturbed` keeps a measurement from changing what training does next.  The callback's module
imports ``transformers.TrainerCallback``; names load on first use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Tracker": "tracker", "TrackSpec": "tracker", "Measured": "tracker", "eval_windows": "tracker",
    "TrajectoryCallback": "callback",
}  # fmt: skip
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trajectory.track' has no attribute {name!r}")
