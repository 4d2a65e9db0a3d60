"""``trajectory verify [MANIFEST]``: check every stored unit against its provenance, offline.

A store is a folder of unit files, ``units/<key>.parquet``, where ``key`` is
:meth:`~trajectory.provenance.Provenance.key` of the unit's provenance (see
:mod:`trajectory.store`).  Verification reads each file on its own and says
what is wrong, in six kinds:

- **unreadable**: a unit file that is not parquet, or lacks the provenance
  columns (truncated, foreign); a failure record that is not JSON.
- **mislabelled**: a checkpoint whose weights equal its run's final checkpoint's while its step is earlier
  (:func:`~trajectory.stored.mislabelled`);
- **inconsistent**: a readable unit whose rows disagree with its name: rows
  naming another key, several provenances in one file, a block twice, or a key
  that is not the hash of the row's own provenance (recomputed for every arm:
  :meth:`~trajectory.provenance.Provenance.key`) — an edited or renamed file.
- **duplicated**: several units for one (experiment, arm, model, seed,
  revision) under the same evaluation (data hash and metric config): the same
  measurement stored twice, e.g. after a Hub branch moved to a new commit.
  Units of other evaluations are not duplicates; a store may hold several.
- **stale** (with a manifest): a unit of the manifest's experiment and arms
  whose metric config digest differs from the manifest's ``[metric]``, whose
  data hash differs from the evaluation windows the manifest's ``[data]`` and
  tokenizer give now, or whose commit differs from what its revision is pinned
  to now (hub: the HF cache's ``refs/``, no network; local: the folder's content
  hash; random-init: the architecture's config hash; twin: its run digest,
  which hashes its spec, architecture and training tokens, for a CPU (fp32) or
  a CUDA (bf16) run).
- **missing** (with a manifest): a scheduled revision, seed or twin step with no
  current unit, with the recorded failure's reason when there is one.

Whatever cannot be computed offline (an uncached tokenizer, a Hub dataset) is
not guessed: it is named in the "not checked" notes.  Nothing is written.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .config import Arm, natural_key
from .errors import TrajectoryError
from .store import KEY_FIELDS, Store, read_unit, with_discovered_schedule
from .stored import mislabelled

IDENTITY = ("experiment", "arm", "model", "seed", "revision")
KINDS = ("unreadable", "inconsistent", "duplicated", "mislabelled", "stale", "missing")


@dataclass(frozen=True)
class Finding:
    """One thing wrong: its kind, what it concerns (a file or a unit identity) and why."""

    kind: str
    where: str
    detail: str


@dataclass
class Verification:
    """The outcome of :func:`verify_store`: counts, findings and notes on what was not checked."""

    store: Path
    units: int = 0
    rows: int = 0
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def count(self, kind: str) -> int:
        return sum(f.kind == kind for f in self.findings)

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(k)} {k}" for k in KINDS)
        return f"verify {self.store}: {self.units} units, {self.rows} rows: {counts}" + (" — ok" if self.ok else "")

    def lines(self) -> list[str]:
        """The summary line, one line per finding, then the notes."""
        return (
            [self.summary()]
            + [f"  {f.kind:<12} {f.where}: {f.detail}" for f in self.findings]
            + [f"  note: {n}" for n in self.notes]
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# -- reading, file by file -----------------------------------------------------------------------------------
def read_units(store: Store) -> tuple[list[dict], list[Finding], int]:
    """(one provenance dict per consistent unit file, findings, total rows); the checks are the store's
    own (:func:`~trajectory.store.unit_problem`), so a file verify names is one the sweep re-measures."""
    units, findings, rows = [], [], 0
    for path in store.unit_files():
        where = f"units/{path.name}"
        frame, problem = read_unit(path)
        if problem is None or problem[0] == "inconsistent":
            rows += frame.height
        if problem is not None:
            findings.append(Finding(problem[0], where, problem[1]))
            continue
        units.append({**{k: frame[k][0] for k in KEY_FIELDS}, "key": path.stem, "file": where})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store.failures()
    findings += [Finding("unreadable", "failed/", str(w.message).split(": ", 1)[-1]) for w in caught]
    return units, findings, rows


def label(unit: dict) -> str:
    seed = "" if unit.get("seed") is None else f" seed {unit['seed']}"
    return f"{unit['experiment']} {unit['arm']} {unit['revision']}{seed}"


def duplicates(units: list[dict]) -> list[Finding]:
    """Several units for one identity under one evaluation."""
    groups: dict[tuple, list[dict]] = {}
    for u in units:
        groups.setdefault(tuple(u[k] for k in (*IDENTITY, "data_hash", "metric_config")), []).append(u)
    return [
        Finding("duplicated", label(g[0]), ", ".join(f"{u['file']} (commit {str(u['commit'])[:12]})" for u in g))
        for g in groups.values()
        if len(g) > 1
    ]


# -- what the manifest gives now -----------------------------------------------------------------------------
@dataclass
class Expected:
    """One arm's schedule entries (revision, seed) → commit (None: not pinnable; absent key: not checked)."""

    arm: str
    commits: dict[tuple[str, int | None], str | None]
    commits_known: bool
    data_hash: str | None
    metric_config: tuple[str, ...]  # the digests a current unit may carry (with or without companions)


def _source(manifest, arm: str):
    """The arm's checkpoint source as the sweep picks it, but offline: the Hub is never contacted."""
    from .sources.resolve import make_source

    return make_source(manifest, arm, offline=True)


def _entries(manifest, arm: str) -> tuple[dict, str]:
    """(schedule entry → commit it should carry now, why the commits are not known or "")."""
    if arm in ("hub", "local"):
        revisions = manifest.schedule.revisions()
        try:
            return {(r, None): c for r, c in _source(manifest, arm).pin(revisions).items()}, ""
        except TrajectoryError as exc:
            return {(r, None): None for r in revisions}, str(exc)
    if arm == Arm.RANDOM_INIT:
        from .arms.random_init import init_commit
        from .sources.resolve import architecture

        entries = {("init", s): None for s in manifest.random_init_seeds}
        if manifest.model_config is None and not Path(manifest.repo or "").is_dir():
            return entries, "the architecture's config would come from the Hub"
        commit = init_commit(architecture(manifest), manifest.init_scheme)
        return {e: commit for e in entries}, ""
    return _twin_entries(manifest)


def _twin_entries(manifest, arm: str = "twin") -> tuple[dict, str]:
    """A twin arm's (the plain twin's, a variant's ``twin:NAME`` or the perturbation null's) steps → the commits a
    run of this manifest would carry now (either precision), from its plan; so a changed variant field makes only
    that variant's units stale."""
    from .arms.twin import PERTURB_ARM, plan_runs

    if manifest.twin is None:
        raise TrajectoryError(f"manifest {manifest.source.name}: arm 'twin' needs a [twin] table")
    steps = manifest.expected_steps().get(arm, ())
    perturb = manifest.perturbation if arm == PERTURB_ARM else None
    seeds = range(perturb.draws) if perturb else manifest.twin_specs()[arm].seeds
    entries = [(f"step{t}", seed) for seed in seeds for t in steps]
    try:
        runs = [r for device in ("cpu", "cuda") for r in plan_runs(manifest, manifest.store_dir, device)]
    except (TrajectoryError, OSError) as exc:
        return {e: None for e in entries}, f"the twin's run digest needs its training tokens: {_first_line(exc)}"
    if perturb:
        mine = tuple(
            f"perturb:{r.digest}/{perturb.draw_seed}" for r in runs if r.arm == "twin" and r.seed == perturb.seed
        )
        return {e: mine for e in entries}, ""
    commits = {seed: tuple(f"twin:{r.digest}" for r in runs if r.arm == arm and r.seed == seed) for seed in seeds}
    return {(rev, seed): commits[seed] for rev, seed in entries}, ""


def _tokenizer_name(manifest, arm: str) -> str:
    """Where the arm's tokenizer is read from, resolved offline (a Hub id becomes its cached snapshot folder)."""
    from .sources.hub import HubSource

    if manifest.tokenizer is None and arm in ("hub", "local"):
        source = _source(manifest, arm)
        source.pin([])  # a HubSource learns its refs from the cache
        return source.tokenizer_path()
    name = manifest.tokenizer or manifest.repo
    if name is None:
        raise TrajectoryError("[model] names no tokenizer")
    if name.startswith("embedded") or Path(name).is_dir():
        return name
    source = HubSource(name, offline=True)
    source.pin([])
    return source.tokenizer_path()


def _data_hash(manifest, arm: str, cache: dict) -> str:
    from .data.tokens import eval_tokens
    from .sources.loading import load_tokenizer

    if manifest.data.kind == "dataset":
        raise TrajectoryError(f"[data] dataset {manifest.data.path!r} would be read from the Hub")
    name = _tokenizer_name(manifest, arm)
    if name not in cache:
        cache[name] = eval_tokens(manifest.data, load_tokenizer(name)).data_hash
    return cache[name]


def expected_arms(manifest) -> tuple[list[Expected], list[str]]:
    """What every arm of ``manifest`` should have in the store now, computed offline; and what was not checked."""
    arms, notes, cache = [], [], {}
    twins = [a for a in manifest.expected_steps() if a.startswith("twin")] if manifest.twin is not None else []
    for arm in (a for listed in manifest.arms for a in (twins if listed == "twin" else [listed])):
        try:
            entries, why = _entries(manifest, arm) if not arm.startswith("twin") else _twin_entries(manifest, arm)
        except TrajectoryError as exc:
            entries, why = {}, f"schedule unknown: {exc}"
        if why:
            notes.append(f"{arm}: commits not checked: {why}")
        try:
            data_hash = _data_hash(manifest, arm, cache)
        except TrajectoryError as exc:
            data_hash = None
            notes.append(f"{arm}: data hash not checked: {exc}")
        m = manifest.metric
        digests = (
            (m.digest(), m.core().digest()) if (m.companions and m.companion_points) or ":" in arm else (m.digest(),)
        )
        arms.append(Expected(arm, entries, not why, data_hash, digests))
    return arms, notes


def stale_reasons(unit: dict, exp: Expected) -> list[str]:
    reasons = []
    if unit["metric_config"] not in exp.metric_config:  # companions at some steps only: with or without them
        reasons.append(f"metric config {unit['metric_config']}, the manifest gives {' or '.join(exp.metric_config)}")
    if exp.data_hash is not None and unit["data_hash"] != exp.data_hash:
        reasons.append(f"data hash {unit['data_hash']}, the manifest's data gives {exp.data_hash}")
    now = exp.commits.get((unit["revision"], unit["seed"])) if exp.commits_known else None
    accepted = now if isinstance(now, tuple) else (now,)  # a twin: its fp32 or its bf16 run
    if now is not None and unit["commit"] not in accepted:  # None: not pinnable now, so nothing to compare with
        now_at = " or ".join(c[:12] for c in accepted)
        reasons.append(f"commit {str(unit['commit'])[:12]}, the revision is now at {now_at}")
    return reasons


def against_manifest(units: list[dict], manifest, store: Store, arms: list[Expected]) -> list[Finding]:
    """Stale units of the manifest's arms, and schedule entries without a current unit."""
    findings = []
    reasons = {(f.get("arm"), f.get("revision"), f.get("seed")): f.get("reason", "") for f in store.failures()}
    for exp in arms:
        mine = [u for u in units if u["experiment"] == manifest.name and u["arm"] == exp.arm]
        current = set()
        for u in mine:
            why = stale_reasons(u, exp)
            if why:
                findings.append(Finding("stale", f"{label(u)} ({u['file']})", "; ".join(why)))
            else:
                current.add((u["revision"], u["seed"]))
        for rev, seed in exp.commits:
            if (rev, seed) not in current:
                why = reasons.get((exp.arm, rev, seed)) or reasons.get((exp.arm, rev, None))
                where = label({"experiment": manifest.name, "arm": exp.arm, "revision": rev, "seed": seed})
                findings.append(Finding("missing", where, f"recorded failure: {why}" if why else "no unit"))
    return findings


def verify_store(store_dir: str | Path, manifest=None) -> Verification:
    """Check ``store_dir`` (and, given a manifest, its experiment) as the module docstring says."""
    store = Store(store_dir)
    if not store.root.is_dir():
        raise TrajectoryError(f"store folder not found: {store.root}; run `trajectory sweep` first, or give --store")
    units, findings, rows = read_units(store)
    result = Verification(
        store.root, units=len(units) + sum(f.where.startswith("units/") for f in findings), rows=rows, findings=findings
    )
    result.findings += duplicates(units)
    result.findings += [
        Finding("mislabelled", f"{model}@{rev}", f"same weights as the final checkpoint ({last})")
        for model, rev, last in mislabelled(store.read())
    ]
    if manifest is not None:
        manifest = with_discovered_schedule(manifest)  # a schedule found among branches: as the sweep found it
        arms, notes = expected_arms(manifest)
        result.findings += against_manifest(units, manifest, store, arms)
        result.notes += notes
    else:
        result.notes.append("no manifest: staleness and missing units were not checked")
    result.findings.sort(key=lambda f: (KINDS.index(f.kind), natural_key(f.where)))  # step2 before step10
    return result
