"""The scheduler: measure every missing (arm, model, seed, revision) unit of a manifest, once.

A unit's key is :func:`~trajectory.store.unit_key` of its provenance — the
experiment, arm, model, revision, the commit it was pinned to, the hash of the
evaluation windows and the metric-config digest — so a unit already in the store
is skipped without fetching anything, and a changed input is a new unit.

Each unit runs :func:`measure_checkpoint`, the same path as ``trajectory
measure`` (``load_model`` then ``measure_blocks``), and is written atomically by
the store.  A unit that fails (revision missing on the Hub, download failed
after retries, a weights file that will not load) is recorded with its reason
and the sweep goes on; re-running retries exactly the failed and missing units.
Non-finite activations (e.g. an overflow) are not a failure of the unit: its
rows are stored, the affected blocks with NaN metrics and ``status`` saying
why, and the summary lists the unit as flagged (as ``measure`` does per block).

Units run one after another with the next ``prefetch`` revisions downloading
in a background thread (disk: at most prefetch + 1 revisions), or with
``workers > 1`` in parallel through joblib (local processes), or on a Dask
cluster through joblib's dask backend (``dask="tcp://HOST:PORT"``).

The random-init and twin arms live in :mod:`trajectory.baselines` and
:mod:`trajectory.twin`; their outcomes join the same summary.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TrajectoryError
from .manifest import Manifest
from .measure import MetricConfig
from .sources import CheckpointSource, Fetched, HubSource, LocalDirSource, RetryPolicy
from .store import Store, UnitOutcome, unit_key
from .tokens import EvalTokens


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep (``None``: the manifest's value)."""

    keep_weights: bool = False
    workers: int | None = None
    prefetch: int | None = None
    dask: str | None = None
    device: str = "cpu"
    progress: bool = True
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class Unit:
    """One checkpoint measurement: identity, the commit it is pinned to, and its store key."""

    identity: dict
    key: str

    @property
    def revision(self) -> str:
        return self.identity["revision"]

    @property
    def label(self) -> str:
        return f"{self.identity['arm']}:{self.identity['revision']}"


@dataclass
class SweepReport:
    """Outcomes of every unit, schedule gaps and revisions with identical weights."""

    name: str
    outcomes: list[UnitOutcome] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)

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
        """One line: counts, the first failures with reasons, duplicates and gaps."""
        line = (f"sweep {self.name}: {self.count('done')} measured, {self.count('cached')} cached, "
                f"{len(self.failed)} failed")
        if self.failed:
            shown = "; ".join(f"{o.label} ({o.reason})" for o in self.failed[:3])
            line += f" [{shown}{'; …' if len(self.failed) > 3 else ''}]"
        if self.flagged:
            line += "; flagged: " + ", ".join(f"{o.label} ({o.reason})" for o in self.flagged)
        if self.duplicates:
            line += "; identical weights: " + ", ".join("=".join(g) for g in self.duplicates)
        if self.gaps:
            line += "; missing on the Hub: " + ", ".join(self.gaps)
        return line


# -- one unit ------------------------------------------------------------------------------------------------
def state_dict_hash(model) -> str:
    """sha256 over the state dict: sorted names, then each tensor's dtype, shape and bytes (16 hex digits)."""
    import torch

    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def measure_checkpoint(path: str, tokens: EvalTokens, cfg: MetricConfig, device: str = "cpu"):
    """(blocks, weights hash): exactly what ``trajectory measure PATH`` computes."""
    from .loading import load_config, load_model
    from .measure import measure_blocks, needs_head

    head = needs_head(cfg, load_config(path).model_type)
    model, _ = load_model(path, device=device, with_head=head)
    return measure_blocks(model, tokens, cfg, device=device), state_dict_hash(model)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def run_unit(unit: Unit, source: CheckpointSource, tokens: EvalTokens, cfg: MetricConfig, store_root: str,
             device: str = "cpu", fetched: Future | None = None) -> UnitOutcome:
    """Fetch, measure, store, release one unit; a failure is recorded, never raised."""
    store = Store(store_root)
    if store.has(unit.key):  # another worker finished it meanwhile
        if fetched is not None and fetched.exception() is None:
            source.release(fetched.result())
        return UnitOutcome(unit.key, unit.label, "cached")
    try:
        got: Fetched = fetched.result() if fetched is not None else source.fetch(unit.revision,
                                                                                unit.identity["commit"])
        if any(p.is_symlink() and not p.exists() for p in got.path.iterdir()):
            # a blob shared with the previous revision was evicted while this one was prefetched: fetch again
            got = source.fetch(unit.revision, unit.identity["commit"])
        try:
            start = time.perf_counter()
            blocks, weights_hash = measure_checkpoint(str(got.path), tokens, cfg, device)
            seconds = time.perf_counter() - start
        finally:
            source.release(got)
    except Exception as exc:  # any failure of one unit is recorded and the sweep goes on
        reason = _one_line(exc)
        store.record_failure(unit.key, unit.identity, reason)
        return UnitOutcome(unit.key, unit.label, "failed", reason)
    rows = [{**unit.identity, **b, "weights_hash": weights_hash, "seconds_fetch": got.seconds,
             "seconds_measure": seconds} for b in blocks]
    store.write_unit(unit.key, rows)  # flagged blocks are stored too: their status says why there is no number
    bad = [b["block"] for b in blocks if b.get("status", "ok") != "ok"]
    return UnitOutcome(unit.key, unit.label, "done", f"non-finite activations in blocks {bad}" if bad else "")


# -- planning ------------------------------------------------------------------------------------------------
def make_source(manifest: Manifest, arm: str, options: SweepOptions) -> CheckpointSource:
    if not manifest.repo:
        raise TrajectoryError(f"manifest {manifest.source.name}: arm {arm!r} needs [model] repo or path")
    if arm == "local" or Path(manifest.repo).is_dir():
        return LocalDirSource(Path(manifest.repo), arm=arm)
    return HubSource(manifest.repo, keep_weights=options.keep_weights, retry=options.retry)


def plan_units(manifest: Manifest, source: CheckpointSource, pins: dict, data_hash: str) -> list[Unit]:
    units = []
    for step, revision in zip(manifest.schedule.steps, manifest.schedule.revisions()):
        identity = {"experiment": manifest.name, "arm": source.arm, "model": source.model, "seed": None,
                    "revision": revision, "step": step, "commit": pins.get(revision), "data_hash": data_hash,
                    "metric_config": manifest.metric.digest()}
        units.append(Unit(identity, unit_key(identity)))
    return units


def evaluation_tokens(manifest: Manifest, source: CheckpointSource, revision: str, commit: str) -> EvalTokens:
    """The manifest's windows, tokenized once; the budget is checked before any weights move."""
    from .adapters import adapter_for
    from .loading import load_config, load_tokenizer
    from .measure import check_budget, split_by_sequence
    from .tokens import eval_tokens

    tokens = eval_tokens(manifest.data, load_tokenizer(manifest.tokenizer or source.tokenizer_path()))
    config = load_config(str(source.config_dir(revision, commit)))
    adapter_for(config.model_type)
    check_budget(tokens, split_by_sequence(tokens.ids.shape[0], manifest.metric), config.hidden_size)
    return tokens


def duplicate_groups(store: Store, units: list[Unit]) -> list[list[str]]:
    """Revisions whose stored weights hash equals another's, in schedule order."""
    keys = {u.key: i for i, u in enumerate(units)}
    frame = store.read()
    if frame.is_empty():
        return []
    seen: dict[str, list[tuple[int, str]]] = {}
    for key, revision, weights in frame.select("key", "revision", "weights_hash").unique().iter_rows():
        if key in keys and weights:
            seen.setdefault(weights, []).append((keys[key], revision))
    return sorted(([r for _, r in sorted(g)] for g in seen.values() if len(g) > 1), key=lambda g: g[0])


# -- running -------------------------------------------------------------------------------------------------
def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="rev", disable=None if enabled else True, dynamic_ncols=True)


def _run_sequential(units, source, tokens, cfg, store_root, options, prefetch, bar) -> list[UnitOutcome]:
    """One unit at a time; the next ``prefetch`` revisions download in a background thread meanwhile."""
    outcomes, futures = [], {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        for i, unit in enumerate(units):
            for j in range(i, min(len(units), i + prefetch + 1)):
                if j not in futures:
                    u = units[j]
                    futures[j] = pool.submit(source.fetch, u.revision, u.identity["commit"])
            outcomes.append(run_unit(unit, source, tokens, cfg, store_root, options.device, futures.pop(i)))
            bar.update(1)
    return outcomes


def _run_parallel(units, source, tokens, cfg, store_root, options, workers, bar) -> list[UnitOutcome]:
    """joblib across revisions: local processes (loky), or a Dask cluster through joblib's dask backend."""
    from joblib import Parallel, delayed, parallel_config

    jobs = (delayed(run_unit)(u, source, tokens, cfg, store_root, options.device) for u in units)
    if options.dask is None:
        with parallel_config(backend="loky", n_jobs=workers):
            return [bar.update(1) or o for o in Parallel(return_as="generator_unordered")(jobs)]
    client = _dask_client(options.dask)
    try:
        with parallel_config(backend="dask", n_jobs=-1):
            return [bar.update(1) or o for o in Parallel(return_as="generator")(jobs)]
    finally:
        client.close()


def _dask_client(address: str):
    try:
        from dask.distributed import Client
    except ImportError:
        raise TrajectoryError("--dask needs dask.distributed: pip install 'trajectory[dask]'") from None
    try:
        return Client(address, timeout=10)
    except (OSError, TimeoutError) as exc:
        raise TrajectoryError(f"cannot reach the Dask scheduler at {address}: {_one_line(exc)}") from None


def sweep_checkpoints(manifest: Manifest, arm: str, store: Store, options: SweepOptions) -> SweepReport:
    """The hub or local arm: pin, plan, skip what is stored, run the rest, report gaps and duplicates."""
    source = make_source(manifest, arm, options)
    pins = source.pin(manifest.schedule.revisions())
    if not any(pins.values()):
        raise TrajectoryError(f"none of the {len(pins)} scheduled revisions exist in {source.model}")
    first = next(r for r in manifest.schedule.revisions() if pins[r])
    tokens = evaluation_tokens(manifest, source, first, pins[first])
    units = plan_units(manifest, source, pins, tokens.data_hash)
    report = SweepReport(manifest.name, gaps=[u.revision for u in units if u.identity["commit"] is None])
    where = (f"in {source.model}" if not isinstance(source, HubSource)
             else "in the local cache (HF_HUB_OFFLINE=1)" if source.offline else "on the Hub")
    for unit in units:
        if unit.identity["commit"] is None:
            reason = f"revision not found {where}"
            store.record_failure(unit.key, unit.identity, reason)
            report.outcomes.append(UnitOutcome(unit.key, unit.label, "failed", reason))
        elif store.has(unit.key):
            report.outcomes.append(UnitOutcome(unit.key, unit.label, "cached"))
    pending = [u for u in units if u.identity["commit"] and not store.has(u.key)]
    workers = options.workers or manifest.workers
    prefetch = manifest.prefetch if options.prefetch is None else options.prefetch
    with _progress(len(pending), f"{manifest.name} {arm}", options.progress) as bar:
        if pending and (workers > 1 or options.dask):
            report.outcomes += _run_parallel(pending, source, tokens, manifest.metric, str(store.root), options,
                                             workers, bar)
        elif pending:
            report.outcomes += _run_sequential(pending, source, tokens, manifest.metric, str(store.root), options,
                                               prefetch, bar)
    report.duplicates = duplicate_groups(store, units)
    prune_failures(store, units)
    return report


def prune_failures(store: Store, units: list[Unit]) -> None:
    """Drop failure records superseded by a stored unit of the same revision (e.g. a gap filled upstream)."""
    stored = {(u.identity["arm"], u.revision): u.key for u in units if store.has(u.key)}
    for record in store.failures():
        key = stored.get((record.get("arm"), record.get("revision")))
        if key and record.get("experiment") == units[0].identity["experiment"] and record["key"] != key:
            store.forget_failure(record["key"])


def _other_arm(arm: str, manifest: Manifest, store: Store, options: SweepOptions) -> list[UnitOutcome]:
    """The random-init and twin arms, imported only when a manifest lists them."""
    if arm == "random-init":
        from .baselines import run_random_init

        return run_random_init(manifest, store, device=options.device, progress=options.progress)
    from .twin import run_twin

    return run_twin(manifest, store, device=options.device, progress=options.progress)


def run_sweep(manifest: Manifest, options: SweepOptions | None = None) -> SweepReport:
    """Every arm of ``manifest``; one report with every unit's outcome."""
    options = options or SweepOptions()
    store = Store(manifest.store_dir)
    report = SweepReport(manifest.name)
    for arm in manifest.arms:
        if arm in ("hub", "local"):
            part = sweep_checkpoints(manifest, arm, store, options)
            report.outcomes += part.outcomes
            report.gaps += part.gaps
            report.duplicates += part.duplicates
        else:
            report.outcomes += _other_arm(arm, manifest, store, options)
    return report


def quick_manifest(repo: str, revisions: list[str], data, metric: MetricConfig, store: str | None) -> Manifest:
    """A one-arm manifest for ``trajectory sweep --repo ORG/NAME --revisions step0,step1,…``."""
    import re

    from .manifest import Schedule

    parts = [re.fullmatch(r"(\D*)(\d+)(\D*)", r.strip()) for r in revisions if r.strip()]
    if not parts or not all(parts) or len({(m[1], m[3]) for m in parts}) != 1:
        raise TrajectoryError(f"--revisions must be names like step0,step1,step1000 (one prefix, a step number), "
                              f"got {','.join(revisions)!r}")
    fmt = parts[0][1] + "{step}" + parts[0][3]
    name = repo.rstrip("/").split("/")[-1]
    if not name or name.startswith("."):  # it names the store folder store/<name>
        raise TrajectoryError(f"--repo {repo!r} does not end in a plain name; give ORG/NAME or a folder path")
    return Manifest(name=name, source=Path(f"{name}.toml"), arms=("local" if Path(repo).is_dir() else "hub",),
                    repo=repo, schedule=Schedule(tuple(sorted({int(m[2]) for m in parts})), fmt), data=data,
                    metric=metric, store_dir=Path(store or f"store/{name}"))


def results_table(manifest: Manifest):
    """The experiment's stored rows, sorted by arm, seed, step and block."""
    import polars as pl

    frame = Store(manifest.store_dir).read().filter(pl.col("experiment") == manifest.name)
    return frame.sort(["arm", "seed", "step", "block"], nulls_last=True)
