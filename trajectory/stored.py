"""What a store alone says about an experiment, for viewing a store without its manifest.

``trajectory sweep --repo … --store DIR`` writes a store that no manifest describes; ``results``, ``plot``,
``report`` and ``verify`` still read it with ``--store DIR``.  :func:`stored_experiment` builds, from the
stored rows and failure records only, the few facts figures and the report need: the experiment, the model,
the arms, each trained arm's steps and the random-init seeds.  Nothing is guessed: what only a manifest
records (the evaluation text, the metric settings, a twin's update budget, a reference profile) is ``None``
here, and the figures and the report then describe the data by its hash alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from . import names
from .config import DEFAULT_BAND_COVERAGE, Arm, natural_key
from .errors import TrajectoryError
from .store import Store


@dataclass(frozen=True)
class StoredExperiment:
    """One experiment as its store records it: read where a :class:`~trajectory.config.Manifest` would be.

    ``steps``: each trained arm's steps the store knows of, stored or recorded as failed (a quick-form
    sweep records every scheduled revision one way or the other; steps never attempted cannot be known);
    ``random_init_seeds`` likewise.  ``data`` and ``metric`` are ``None``: the rows carry only their hashes
    (``data_hash``, ``metric_config``).
    """

    name: str
    store_dir: Path
    repo: str
    arms: tuple[str, ...]
    steps: dict[str, tuple[int, ...]] = field(default_factory=dict)
    random_init_seeds: tuple[int, ...] = ()
    init_scheme: None = None  # the random-init draws' init: whichever the store holds (verdicts.one_init)
    band_coverage: float = DEFAULT_BAND_COVERAGE
    data: None = None
    metric: None = None
    model_config: None = None
    twin: None = None
    reference_profile: None = None
    reference_label: str = ""

    @property
    def source(self) -> Path:
        """Where this description came from: the store folder."""
        return self.store_dir

    @property
    def model_name(self) -> str:
        return self.repo

    def expected_steps(self) -> dict[str, tuple[int, ...]]:
        return dict(self.steps)

    def total_steps(self) -> dict[str, int]:
        """Unknown without a manifest (a twin's budget, a schedule's end): figures use the last stored step."""
        return {}


def _experiments(frame: pl.DataFrame, root: Path, experiment: str | None) -> str:
    names = sorted(n for n in frame["experiment"].unique().to_list() if n)
    if experiment is not None:
        if experiment not in names:
            raise TrajectoryError(f"store {root} has no rows of experiment {experiment!r}; it has {names}")
        return experiment
    if len(names) != 1:
        raise TrajectoryError(
            f"store {root} holds experiments {names}: name one with --experiment NAME, or give its manifest"
        )
    return names[0]


def plain_experiment(name: str, root: Path) -> str:
    """``name`` when it is a plain name, as a manifest's must be (one part, no leading '.'): it becomes the
    folder ``figures/<name>/``, and a store's rows may come from anywhere."""
    names.relative_name(name, f"experiment name in store {root}")
    if "/" in name or name.startswith("."):
        raise TrajectoryError(f"experiment name in store {root} {name!r} is not a plain name (no '/', no leading '.')")
    return name


def stored_experiment(store_dir: str | Path, experiment: str | None = None) -> StoredExperiment:
    """The experiment of ``store_dir`` (or the one named ``experiment`` when it holds several), from its rows."""
    store = Store(store_dir)
    frame = store.read()
    if frame.is_empty():
        raise TrajectoryError(f"store {store.root} has no rows; run `trajectory sweep … --store {store.root}` first")
    name = plain_experiment(_experiments(frame, store.root, experiment), store.root)
    rows = frame.filter(pl.col("experiment") == name)
    failed = [f for f in store.failures() if f.get("experiment") == name]
    trained = [str(a) for a in Arm if a.trained]
    # the trained arms name the checkpoints (a local folder resolved); random-init rows only the architecture
    named = rows.filter(pl.col("arm").is_in(trained))
    models = sorted(m for m in (named if named.height else rows)["model"].unique().to_list() if m)
    present = set(rows["arm"].to_list()) | {str(f.get("arm")) for f in failed}
    steps = {
        arm: tuple(
            sorted(
                set(rows.filter(pl.col("arm") == arm)["step"].drop_nulls().to_list())
                | {int(f["step"]) for f in failed if f.get("arm") == arm and isinstance(f.get("step"), int)}
            )
        )
        for arm in trained
        if arm in present
    }
    seeds = set(rows.filter(pl.col("arm") == str(Arm.RANDOM_INIT))["seed"].drop_nulls().to_list())
    seeds |= {f["seed"] for f in failed if f.get("arm") == Arm.RANDOM_INIT and isinstance(f.get("seed"), int)}
    return StoredExperiment(
        name=name,
        store_dir=store.root,
        repo=", ".join(models) or name,
        arms=tuple(str(a) for a in Arm if str(a) in present),
        steps=steps,
        random_init_seeds=tuple(sorted(seeds)),
    )


def mislabelled(frame: pl.DataFrame) -> list[tuple[str, str, str]]:
    """(model, revision, final revision) of each stored checkpoint whose weights hash equals its run's final
    checkpoint's while its step is earlier: a suite's branch that serves final-era weights under an early
    step's name (pythia-2.8b's, Pythia issues #83, #195, #205).  A run is one (experiment, arm, model) of the
    hub or local arm; its final checkpoint is its largest stored step."""
    need = {"experiment", "arm", "model", "revision", "step", "weights_hash"}
    if frame.is_empty() or not need <= set(frame.columns):
        return []
    units = frame.filter(pl.col("arm").is_in([str(Arm.HUB), str(Arm.LOCAL)]) & pl.col("weights_hash").is_not_null())
    units = units.select(sorted(need)).unique().sort("step")
    found = []
    for (_, _, model), run in units.group_by(["experiment", "arm", "model"], maintain_order=True):
        last = run.row(run.height - 1, named=True)
        for row in run.head(run.height - 1).iter_rows(named=True):
            if row["step"] < last["step"] and row["weights_hash"] == last["weights_hash"]:
                found.append((model, row["revision"], last["revision"]))
    return sorted(found, key=lambda t: (t[0], natural_key(t[1])))
