"""The scheduler: run every missing unit of a manifest's arms, once, under one failure policy.

For each arm (:mod:`trajectory.arms`) it takes the arm's plan, skips every unit already in the store (its
key is :meth:`~trajectory.provenance.Provenance.key` of its provenance, so a changed input is a new unit),
and runs the rest: in order in this process, or — with ``workers > 1`` — one group of units per job
through joblib (local processes, each with ``cores // workers`` torch threads), or on a Dask cluster
through joblib's dask backend.  A group is a unit alone, or the steps of one twin seed in order.

The failure policy is the same for every arm: a unit that raises is recorded in the store with a
one-line reason and the sweep goes on; in a chained arm (the twin) the group's later units are recorded
as failed too, since they continue the failed one.  Re-running retries exactly the failed and missing
units.  A unit counts as stored only when its file reads back as the unit its key names; a damaged file
is moved to the store's ``quarantine/``, listed in the summary, and its unit measured again.  Non-finite
activations are not a failure: the unit is stored with the affected blocks flagged in ``status``, and the
summary lists it.  Ctrl-C stops at once; finished units are kept.

The device is resolved once, when the :class:`SweepOptions` are made (:func:`resolve_device`: ``auto`` is
CUDA when torch sees a GPU).
On a CPU the twin is first costed (:func:`~trajectory.arms.twin.training_cost`: a timed short update,
extrapolated by tokens); when that exceeds :data:`.TWIN_CPU_LIMIT_S` and ``--arms`` did
not name the arms, the twin is skipped with one line on stderr, the other arms run, and the summary says
what was skipped and why.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .allocator import keep_freed_memory
from .arms import ArmRunner, Unit, make_arm
from .config import CPU_FLOPS_FLOOR, DEVICES, TWIN_CPU_LIMIT_S, Arm, Manifest, natural_key
from .errors import ConfigError, DiskFullError, TrajectoryError
from .progress import progress_bar
from .store import Store, UnitOutcome, with_discovered_schedule
from .stored import mislabelled


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    if not isinstance(device, str) or device.split(":")[0] not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return device
    if cuda_available():
        return "cuda" if device == "auto" else device
    if device == "auto":
        return "cpu"
    raise TrajectoryError(f"--device {device}, but torch sees no CUDA device; use --device cpu (or auto)")


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep.  ``None``: the manifest's value.

    ``keep_weights`` keeps downloaded weights in the HF cache; ``workers`` parallel local processes;
    ``prefetch`` revisions downloaded ahead; ``dask`` a scheduler address; ``device`` where models run
    (``auto``: CUDA when torch sees a GPU, else the CPU);
    ``progress`` draws bars on a terminal; ``retry`` the Hub retry policy (a
    :class:`~trajectory.sources.hub.RetryPolicy`); ``arms`` a subset of the manifest's arms to run.
    """

    keep_weights: bool = False
    workers: int | None = None
    prefetch: int | None = None
    dask: str | None = None
    device: str = "auto"
    progress: bool = True
    retry: object | None = None
    arms: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.arms is not None and not tuple(self.arms):  # "run no arm" must not read as "every arm, unguarded"
            raise ConfigError("--arms names no arm; give a comma-separated list such as hub,random-init")
        object.__setattr__(self, "device", resolve_device(self.device))  # once: every arm sees cpu or cuda


@dataclass
class SweepReport:
    """Outcomes of every unit, schedule gaps, units with identical weights, damaged unit files moved aside
    (``(file name in quarantine/, why)``; their units were measured again), and arms skipped (arm → why)."""

    name: str
    store: str = ""
    outcomes: list[UnitOutcome] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    mislabelled: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[UnitOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def flagged(self) -> list[UnitOutcome]:
        """Measured units with blocks flagged instead of measured (their rows carry the status)."""
        return [o for o in self.outcomes if o.status == "done" and o.reason]

    def summary(self) -> str:
        """One line: counts, the first failures with reasons, duplicates, gaps and where the rows went."""
        counts = f"{self.count('done')} measured, {self.count('cached')} cached, {len(self.failed)} failed"
        line = f"sweep {self.name}: {counts}"
        if self.failed:
            shown = "; ".join(f"{o.label} ({o.reason})" for o in self.failed[:3])
            line += f" [{shown}{'; …' if len(self.failed) > 3 else ''}]"
        if self.flagged:
            line += "; flagged: " + ", ".join(f"{o.label} ({o.reason})" for o in self.flagged)
        if self.duplicates:
            line += "; identical weights: " + ", ".join("=".join(g) for g in self.duplicates)
        if self.mislabelled:
            line += "; mislabelled: " + ", ".join(self.mislabelled)
        if self.gaps:
            line += "; missing: " + ", ".join(self.gaps)
        if self.moved:
            shown = ", ".join(f"{name} ({why})" for name, why in self.moved[:3])
            line += f"; {len(self.moved)} damaged unit file(s) moved to {Path(self.store) / 'quarantine'}: {shown}"
            line += ", …" if len(self.moved) > 3 else ""
        if self.skipped:
            line += "; skipped: " + ", ".join(f"{arm} ({why})" for arm, why in self.skipped.items())
        return line + (f"; rows in {self.store}" if self.store else "")


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), at most 300 characters."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# -- one group -----------------------------------------------------------------------------------------------
def _outcome(store: Store, unit: Unit, rows: list[dict]) -> UnitOutcome:
    store.write_unit(unit.key, rows)  # flagged blocks are stored too: their status says why there is no number
    bad = sorted({r["block"] for r in rows if r.get("status", "ok") != "ok"})
    return UnitOutcome(unit.key, unit.label, "done", f"non-finite activations in blocks {bad}" if bad else "")


def _failed(store: Store, unit: Unit, reason: str) -> UnitOutcome:
    store.record_failure(unit.key, unit.provenance.row(), reason)
    return UnitOutcome(unit.key, unit.label, "failed", reason)


def run_group(
    arm: ArmRunner, units: list[Unit], store_root: str, threads: int | None = None, bar=None
) -> list[UnitOutcome]:
    """Run ``units`` in order; a failure is recorded, never raised (see the module docstring).  Freed activation
    buffers stay in the process (:func:`~trajectory.allocator.keep_freed_memory`): 15% less CPU per twin update."""
    keep_freed_memory()
    if threads:
        import torch

        torch.set_num_threads(threads)
    store, outcomes, broken = Store(store_root), [], ""
    for unit in units:
        if store.has(unit.key):  # another worker finished it meanwhile
            outcomes.append(UnitOutcome(unit.key, unit.label, "cached"))
        elif broken:
            outcomes.append(_failed(store, unit, f"an earlier step of this run failed: {broken}"))
        else:
            try:
                outcomes.append(_outcome(store, unit, arm.run(unit)))
            except DiskFullError:  # every unit after it would fail alike, its failure record too: stop here
                raise
            except Exception as exc:  # one unit's failure, whatever it is, is recorded and the sweep goes on
                outcomes.append(_failed(store, unit, one_line(exc)))
                broken = outcomes[-1].reason if arm.chained else ""
        if bar is not None:
            bar.update(1)
    return outcomes


def _groups(units: list[Unit]) -> list[list[Unit]]:
    groups: dict[str, list[Unit]] = {}
    for unit in units:
        groups.setdefault(unit.group or unit.key, []).append(unit)
    return list(groups.values())


def _run_parallel(
    arm: ArmRunner, groups: list[list[Unit]], store_root: str, options: SweepOptions, workers: int, bar
) -> list[UnitOutcome]:
    """joblib across groups: local processes (loky), or a Dask cluster through joblib's dask backend."""
    from joblib import Parallel, delayed, parallel_config

    threads = max(1, (os.cpu_count() or 1) // workers)
    if getattr(arm, "progress", False):  # workers share one terminal: only this process draws a bar
        arm = copy.copy(arm)
        arm.progress = False
    jobs = (delayed(run_group)(arm, g, store_root, threads) for g in groups)
    done: list[UnitOutcome] = []
    with _watching(Store(store_root), [u for g in groups for u in g], bar):
        if options.dask is None:
            lifeline = {"initializer": die_with_parent, "initargs": (os.getpid(),)}
            with parallel_config(backend="loky", n_jobs=min(workers, len(groups)), **lifeline):
                done = [o for part in Parallel(return_as="generator_unordered")(jobs) for o in part]
            return done
        client = _dask_client(options.dask)
        try:
            with parallel_config(backend="dask", n_jobs=-1):
                done = [o for part in Parallel(return_as="generator")(jobs) for o in part]
        finally:
            client.close()
    return done


@contextmanager
def _watching(store: Store, units: list[Unit], bar, every: float = 1.0):
    """Advance ``bar`` as workers store units: joblib returns a group's outcomes only when the whole group
    (a twin seed's whole run) is done.  Polls for the units' files; at the end the bar shows every unit."""
    stop, counted = threading.Event(), [0]

    def poll() -> None:
        while not stop.wait(every):
            n = sum(store.unit_path(u.key).is_file() for u in units)
            bar.update(max(0, n - counted[0]))
            counted[0] = max(counted[0], n)

    watcher = threading.Thread(target=poll, name="progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        bar.update(max(0, len(units) - counted[0]))


def die_with_parent(parent: int, every: float = 0.25) -> None:
    """Loky worker initializer: the worker exits within ``every`` seconds of its sweep process's death.

    A worker orphaned by ``kill -9`` of the sweep would otherwise go on measuring and writing units for
    minutes, and keep loky's resource tracker alive.  A daemon thread compares ``os.getppid()`` with the
    sweep's pid (loky starts workers as direct children; an orphan is re-parented) and ends the process
    with ``os._exit``: a unit being written is left as a temporary file, never as a partial unit.
    """
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _dask_client(address: str):
    try:
        from dask.distributed import Client
    except ImportError:
        raise TrajectoryError("--dask needs dask.distributed: pip install 'trajectory[dask]'") from None
    try:
        return Client(address, timeout=10)
    except (OSError, TimeoutError) as exc:
        raise TrajectoryError(f"cannot reach the Dask scheduler at {address}: {one_line(exc)}") from None


# -- one arm, every arm ----------------------------------------------------------------------------------------
def run_arm(arm: ArmRunner, store: Store, options: SweepOptions, workers: int) -> SweepReport:
    """Plan ``arm``, skip what is stored, run the rest; gaps and duplicates go into the report."""
    units = arm.plan()
    report = SweepReport("")
    for unit in units:
        if not unit.ready:
            report.outcomes.append(_failed(store, unit, unit.reason))
            report.gaps.append(unit.provenance.revision)
        elif store.has(unit.key):
            report.outcomes.append(UnitOutcome(unit.key, unit.label, "cached"))
    pending = [u for u in units if u.ready and not store.has(u.key)]
    groups = _groups(pending)
    with progress_bar(len(pending), f"{arm.arm} units", "unit", options.progress, log=True) as bar:
        try:
            if pending and (options.dask or (workers > 1 and len(groups) > 1)):
                report.outcomes += _run_parallel(arm, groups, str(store.root), options, workers, bar)
            elif pending:
                arm.start(pending)
                report.outcomes += run_group(arm, pending, str(store.root), bar=bar)
        finally:
            arm.close()
    report.duplicates = duplicate_groups(store, units)
    report.mislabelled = [
        f"{rev} (same weights as the final checkpoint, {last})"
        for model, rev, last in mislabelled(store.read())
        if any(u.provenance.model == model and u.provenance.revision == rev for u in units)
    ]
    prune_failures(store, units)
    return report


def duplicate_groups(store: Store, units: list[Unit]) -> list[list[str]]:
    """Labels of units whose stored weights hash equals another's, in plan order."""
    order = {u.key: (i, u.label) for i, u in enumerate(units)}
    frame = store.read()
    if frame.is_empty():
        return []
    seen: dict[str, list[tuple[int, str]]] = {}
    for key, weights in frame.select("key", "weights_hash").unique().iter_rows():
        if key in order and weights:
            seen.setdefault(weights, []).append(order[key])
    return sorted(
        ([label.split(":", 1)[-1] for _, label in sorted(g)] for g in seen.values() if len(g) > 1),
        key=lambda g: natural_key(g[0]),
    )


def prune_failures(store: Store, units: list[Unit]) -> None:
    """Drop failure records superseded by a stored unit of the same (arm, revision, seed), e.g. a gap filled."""
    stored = {(u.provenance.arm, u.provenance.revision, u.provenance.seed): u.key for u in units if store.has(u.key)}
    experiment = units[0].provenance.experiment if units else None
    for record in store.failures():
        key = stored.get((record.get("arm"), record.get("revision"), record.get("seed")))
        if key and record.get("experiment") == experiment and record["key"] != key:
            store.forget_failure(record["key"])


def twin_skip_reason(manifest: Manifest, options: SweepOptions, arms) -> str:
    """Why the twin is left out of this sweep ("" when it runs).

    The rule: on a CPU, when ``--arms`` did not name the arms, a twin whose training is estimated
    (:func:`~trajectory.arms.twin.training_cost`) to take longer than :data:`.TWIN_CPU_LIMIT_S` is skipped.
    A twin whose FLOPs fit the limit even at :data:`~trajectory.config.CPU_FLOPS_FLOOR` is not timed at all
    (the demo's: a probe on a loaded machine must never skip it).
    """
    if Arm.TWIN not in arms or options.arms is not None or options.device != "cpu":
        return ""
    from .arms.twin import duration, training_cost, training_flops
    from .sources.resolve import make_source

    if manifest.model_config is None:  # one short request first: an unreachable Hub fails here, in seconds
        make_source(manifest, Arm.HUB, retry=options.retry).pin([])
    if training_flops(manifest) / CPU_FLOPS_FLOOR <= TWIN_CPU_LIMIT_S:
        return ""
    cost = training_cost(manifest, "cpu")
    if cost.seconds <= TWIN_CPU_LIMIT_S:
        return ""
    others = ",".join(str(a) for a in arms if a != Arm.TWIN)
    return (
        f"training it on this CPU would take {cost.describe()}, over the {duration(TWIN_CPU_LIMIT_S)} limit "
        f"for a CPU; run it anyway with --arms {','.join(map(str, arms))} (or on a GPU: --device cuda)"
        + (f", or leave it out with --arms {others}" if others else "")
    )


def run_sweep(manifest: Manifest, options: SweepOptions | None = None) -> SweepReport:
    """Every arm of ``manifest`` (or ``options.arms``); one report with every unit's outcome."""
    options = options or SweepOptions()
    arms = options.arms or manifest.arms
    unknown = [a for a in arms if a not in manifest.arms]
    if unknown:
        raise TrajectoryError(f"arm {unknown[0]!r} is not in {manifest.source.name}'s arms {list(manifest.arms)}")
    store = Store(manifest.store_dir)
    report = SweepReport(manifest.name, store=str(store.root))
    why = twin_skip_reason(manifest, options, arms)
    if why:
        print(f"trajectory: skipping the twin: {why}", file=sys.stderr, flush=True)
        report.skipped[str(Arm.TWIN)] = why.split(";")[0]
    workers = options.workers or manifest.workers
    for name in (a for a in arms if a not in report.skipped):
        # a schedule the hub or local arm discovered is what the arms after it (a twin) follow
        part = run_arm(make_arm(with_discovered_schedule(manifest), Arm(name), options), store, options, workers)
        report.outcomes += part.outcomes
        report.gaps += part.gaps
        report.duplicates += part.duplicates
        report.mislabelled += part.mislabelled
    report.moved = [(path.name, why) for path, why in store.moved]
    return report
