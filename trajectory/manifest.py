"""Experiments as data: ``manifests/<name>.toml`` parsed into typed, validated dataclasses.

Every error names the file, the field and what was expected, in one line, e.g.
``manifest pythia-160m.toml: [data] 'tokens' must be an integer ≥ 2, got 'many'``.
Unknown fields are errors too (a typo must not silently fall back to a default).

Sections: ``[experiment]`` (name, arms), ``[model]`` (Hub ``repo`` or local
``path``, or an inline ``config`` table for models that exist only as an
architecture; ``tokenizer``), ``[schedule]`` (an explicit ``revisions`` list, the
Pythia or dense rule, or ``rule = "branches"``: revisions found among the repo's branches when a sweep
plans, :mod:`trajectory.discovery`; ``tokens_per_step``), ``[data]`` (evaluation text), ``[metric]``, ``[random_init]``
(seeds, init, band coverage), ``[twin]`` (training settings; its variants and perturbation null:
:mod:`trajectory.manifest_twin`), ``[sweep]`` (store, prefetch, workers),
``[reference]`` (a published final-step profile to draw).
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from .config import (
    DEFAULT_BAND_COVERAGE,
    INIT_SCHEMES,
    MAX_NAME_BYTES,
    MAX_SEED,
    SWEPT_ARMS,
    DataSpec,
    Manifest,
    MetricConfig,
    Schedule,
    dense_steps,
    natural_key,
    pythia_steps,
    step_of,
)
from .discovery import LISTINGS, BranchRule
from .errors import ConfigError, ManifestError
from .manifest_twin import twin_tables
from .schedule import segment_steps

ARMS = tuple(str(a) for a in SWEPT_ARMS)


class _Reader:
    """Validates one manifest's tables, naming the file and field in every error."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, section: str, key: str, expected: str, got: Any) -> ManifestError:
        where = f"[{section}] '{key}'" if key else f"[{section}]"
        return ManifestError(f"manifest {self.path.name}: {where} must be {expected}, got {got!r}")

    def table(self, doc: dict, section: str, allowed: set[str]) -> dict:
        tab = doc.get(section, {})
        if not isinstance(tab, dict):
            raise self.fail(section, "", "a table", tab)
        unknown = sorted(set(tab) - allowed)
        if unknown:
            raise self.fail(section, unknown[0], f"one of {sorted(allowed)} (unknown field)", unknown[0])
        return tab

    def typed(self, cls, doc: dict, section: str, rename: dict[str, str] | None = None):
        """Build dataclass ``cls`` from ``doc[section]``, each value checked against its default's type."""
        rename = rename or {}
        names = {f.name: f for f in fields(cls)}
        allowed = {rename.get(n, n) for n in names}
        tab = self.table(doc, section, allowed)
        inverse = {v: k for k, v in rename.items()}
        values = {}
        for key, value in tab.items():
            name = inverse.get(key, key)
            values[name] = self.check(section, key, value, getattr(cls(), name) if _defaults_ok(cls) else None)
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ManifestError(
                f"manifest {self.path.name}: [{section}] {str(exc).removeprefix(f'[{section}] ')}"
            ) from None

    def check(self, section: str, key: str, value: Any, default: Any) -> Any:
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            expected = {bool: "true or false", int: "a non-negative integer", float: "a number", str: "a string"}
            raise self.fail(section, key, expected[type(default)], value)
        return value


def _defaults_ok(cls) -> bool:
    try:
        cls()
        return True
    except TypeError:
        return False


def _explicit_revisions(r: _Reader, revisions: Any) -> Schedule:
    """``[schedule] revisions = ["step0", "step1000", …]``: exactly these, ordered by the step each name carries."""
    if not (isinstance(revisions, list) and revisions and all(isinstance(v, str) and v for v in revisions)):
        raise r.fail("schedule", "revisions", "a non-empty list of revision names", revisions)
    steps = [step_of(v) for v in revisions]
    if None in steps:
        bad = revisions[steps.index(None)]
        raise r.fail("schedule", "revisions", "names that carry a step number (like step1000)", bad)
    if len(set(steps)) != len(steps):
        raise r.fail("schedule", "revisions", "names of distinct steps", revisions)
    return Schedule(tuple(sorted(zip(steps, revisions, strict=True), key=lambda p: (p[0], natural_key(p[1])))))


def _branches(r: _Reader, tab: dict) -> Schedule:
    """``rule = "branches"``, ``"commits"`` or ``"repos"`` (:mod:`trajectory.discovery`): found when a sweep plans."""
    extra = sorted(set(tab) - {"rule", *BRANCH_KEYS})
    if extra:
        keys = ", ".join(BRANCH_KEYS)
        raise r.fail("schedule", extra[0], f"absent when rule = {tab['rule']!r} (give {keys})", extra[0])
    rule = r.typed(BranchRule, {"schedule": {k: v for k, v in tab.items() if k in ("rule", *BRANCH_KEYS)}}, "schedule")
    return Schedule((), rule=rule)


BRANCH_KEYS = ("pattern", "thin", "log_points", "branch", "step_scale", "step_map")


def _schedule(r: _Reader, doc: dict) -> Schedule:
    keys = {"revisions", "steps", "rule", "log_until", "every", "last", "points", "revision_format", "tokens_per_step"}
    keys |= {"segments", *BRANCH_KEYS}
    tab = r.table(doc, "schedule", keys)
    given = [k for k in ("revisions", "steps", "rule") if k in tab]
    if len(given) > 1:
        raise r.fail("schedule", given[1], f"absent when '{given[0]}' is given (one schedule only)", tab[given[1]])
    if tab.get("rule") in LISTINGS:
        return _branches(r, tab)
    for key in BRANCH_KEYS:
        if key in tab:
            raise r.fail("schedule", key, "absent unless rule = 'branches', 'commits' or 'repos'", tab[key])
    if "revisions" in tab:
        extra = sorted(set(tab) - {"revisions", "tokens_per_step"})
        if extra:
            raise r.fail("schedule", extra[0], "absent when 'revisions' lists the revisions", tab[extra[0]])
        return _explicit_revisions(r, tab["revisions"])
    fmt = tab.get("revision_format", "step{step}")
    if not isinstance(fmt, str) or "{step}" not in fmt:
        raise r.fail("schedule", "revision_format", "a string containing '{step}'", fmt)
    if "steps" in tab:
        steps = tab["steps"]
        if not (isinstance(steps, list) and steps and all(_count(s, 0) for s in steps)):
            raise r.fail("schedule", "steps", "a non-empty list of non-negative integers", steps)
        return Schedule.from_steps(steps, fmt)
    rule = tab.get("rule", "pythia")
    if "segments" in tab and rule != "segments":
        raise r.fail("schedule", "segments", "absent unless rule = 'segments'", tab["segments"])
    if rule not in RULES:
        rules = ", ".join(repr(k) for k in [*RULES, *LISTINGS])
        raise r.fail("schedule", "rule", f"one of {rules} (or give 'steps' or 'revisions')", rule)
    make, defaults = RULES[rule]
    extra = sorted(set(tab) - {"rule", "revision_format", "tokens_per_step", *defaults})
    if extra:
        raise r.fail("schedule", extra[0], f"absent under rule = {rule!r}", tab[extra[0]])
    nums = {k: tab.get(k, d) for k, d in defaults.items()}
    for k, v in nums.items():
        if k != "segments" and not _count(v, 1):  # segments is a list: segment_steps checks it
            raise r.fail("schedule", k, "a positive integer", v)
    try:
        return Schedule.from_steps(make(**nums), fmt)
    except ConfigError as exc:
        raise ManifestError(f"manifest {r.path.name}: [schedule] {exc}") from None


#: Schedule rules: the step builder and its parameters with their defaults.
RULES = {
    "pythia": (pythia_steps, {"log_until": 512, "every": 1000, "last": 143_000}),
    "dense": (dense_steps, {"log_until": 64, "points": 40, "last": 1000}),
    "segments": (segment_steps, {"segments": None}),
}


def _tokens_per_step(r: _Reader, doc: dict, schedule: Schedule) -> Schedule:
    """``[schedule] tokens_per_step = N`` (with any schedule form): each checkpoint stores ``step · N`` tokens seen."""
    per_step = doc.get("schedule", {}).get("tokens_per_step")
    if per_step is None:
        return schedule
    if not _count(per_step, 1):
        raise r.fail("schedule", "tokens_per_step", "a positive integer (training tokens per optimiser step)", per_step)
    last = schedule.steps[-1] if schedule.resolved else 1
    if per_step * max(1, last) > 2**63 - 1:  # tokens seen are stored as signed 64-bit integers
        raise r.fail("schedule", "tokens_per_step", f"at most (2⁶³ − 1) / {max(1, last)} (the last step)", per_step)
    return schedule.with_tokens_per_step(per_step)


def _count(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _plain(value: Any) -> bool:
    """A non-empty string without control characters (NUL, newline, …): it becomes a path or a label."""
    return isinstance(value, str) and bool(value) and not any(ord(c) < 32 or ord(c) == 127 for c in value)


def _data(r: _Reader, doc: dict) -> DataSpec:
    tab = r.table(
        doc,
        "data",
        {"text_file", "parquet", "dataset", "embedded", "column", "tokens", "seq_len", "allow_long", "seed"}
        | {"max_doc_share"},
    )
    kinds = [k for k in ("text_file", "parquet", "dataset", "embedded") if k in tab]
    if len(kinds) > 1:
        raise r.fail("data", kinds[1], f"absent when '{kinds[0]}' is given (one source only)", tab[kinds[1]])
    kind = kinds[0] if kinds else "embedded"
    path = tab.get(kind, "")
    if kind != "embedded" and (not isinstance(path, str) or not path):
        raise r.fail("data", kind, "a non-empty string", path)
    tokens, seq_len = tab.get("tokens", DataSpec.tokens), tab.get("seq_len", DataSpec.seq_len)
    if _count(tokens, 0) and _count(seq_len, 0) and (seq_len < 2 or tokens < seq_len):
        raise r.fail("data", "tokens", f"an integer ≥ seq_len ({seq_len}) ≥ 2", tokens)
    own = ("column", "tokens", "seq_len", "allow_long", "seed", "max_doc_share")
    spec = r.typed(DataSpec, {"data": {k: v for k, v in tab.items() if k in own}}, "data")
    base = {"text_file": "text"}.get(kind, kind)
    if base in ("text", "parquet") and not Path(path).is_absolute():
        path = str(r.path.parent / path)  # relative to the manifest's own folder
    path = path if kind != "embedded" else str(tab.get("embedded") or "")
    return replace(spec, kind=base, path=path)


def _model(r: _Reader, doc: dict) -> tuple[str | None, dict | None, str | None]:
    tab = r.table(doc, "model", {"repo", "path", "config", "tokenizer"})
    repo = tab.get("repo") or tab.get("path")
    if "repo" in tab and "path" in tab:
        raise r.fail("model", "path", "absent when 'repo' is given", tab["path"])
    if repo is not None and (not isinstance(repo, str) or not repo):
        raise r.fail("model", "repo", "a Hub id ORG/NAME or a local directory", repo)
    if "path" in tab and not Path(repo).is_absolute():
        repo = str(r.path.parent / repo)
    config = tab.get("config")
    if config is not None and (not isinstance(config, dict) or not isinstance(config.get("model_type"), str)):
        raise r.fail("model", "config", "a table with a 'model_type' string", config)
    for key, value in (config or {}).items():
        if SIZE_FIELD.fullmatch(key) and not _count(value, 1):
            raise r.fail("model.config", key, "a positive integer (a size or a count)", value)
    if repo is None and config is None:
        raise r.fail("model", "repo", "given (or an inline 'config' table)", None)
    tok = tab.get("tokenizer")
    if tok is not None and not isinstance(tok, str):
        raise r.fail("model", "tokenizer", "a string", tok)
    return repo, config, tok


#: ``[model.config]`` fields that are sizes or counts (``hidden_size``, ``num_hidden_layers``, GPT-2's ``n_layer``,
#: ``max_position_embeddings``, ``vocab_size``): each must be a positive integer, or a model of no layers is built.
SIZE_FIELD = re.compile(r"(num_\w+|n_(layer|head|embd|inner|positions|ctx)|\w+_size|max_position_embeddings)")


def _seed_list(r: _Reader, section: str, seeds: Any, count_ok: bool = True, key: str = "seeds") -> tuple[int, ...]:
    """A list of distinct seeds in [0, 2⁶³ − 1], or (``count_ok``) a count N meaning 0 … N − 1."""
    if count_ok and _count(seeds, 0) and seeds <= 1000:
        seeds = list(range(seeds))
    ok = isinstance(seeds, list) and all(_count(s, 0) and s <= MAX_SEED for s in seeds)
    if not ok or len(set(seeds)) != len(seeds):
        what = "a count or a list" if count_ok else "a list"
        raise r.fail(section, key, f"{what} of distinct integers in [0, 2⁶³ − 1]", seeds)
    return tuple(seeds)


def _random_init(r: _Reader, doc: dict) -> tuple[tuple[int, ...], str | None, float]:
    """``[random_init]``: ``seeds``, ``init`` (:data:`~trajectory.config.INIT_SCHEMES`; absent: the family's
    real init) and ``coverage`` of the prediction band, in (0, 1)."""
    tab = r.table(doc, "random_init", {"seeds", "init", "coverage"})
    init = tab.get("init")
    if init is not None and init not in INIT_SCHEMES:
        raise r.fail("random_init", "init", f"one of {list(INIT_SCHEMES)}", init)
    coverage = tab.get("coverage", DEFAULT_BAND_COVERAGE)
    if isinstance(coverage, bool) or not (isinstance(coverage, int | float) and 0.0 < coverage < 1.0):
        raise r.fail("random_init", "coverage", "a number in (0, 1), e.g. 0.95", coverage)
    return _seed_list(r, "random_init", tab.get("seeds", [0, 1, 2, 3, 4])), init, float(coverage)


def _folds_fit(r: _Reader, metric: MetricConfig, data: DataSpec) -> MetricConfig:
    """A k-fold interval needs two windows per fold (:func:`trajectory.engine.measure.groups_of`)."""
    windows = data.tokens // data.seq_len
    if "ci" in metric.companions and 2 * metric.folds > windows:
        raise r.fail("metric", "folds", f"at most {windows // 2} ([data] gives {windows} windows)", metric.folds)
    return metric


def _experiment(r: _Reader, doc: dict) -> tuple[str, tuple[str, ...], str]:
    tab = r.table(doc, "experiment", {"name", "arms", "description"})
    name = tab.get("name", r.path.stem)
    if not _plain(name) or "/" in name or name.startswith(".") or len(name.encode()) > MAX_NAME_BYTES:
        what = f"a plain name of at most {MAX_NAME_BYTES} bytes (it names folders; no '/', no control characters)"
        raise r.fail("experiment", "name", what, name if len(name) <= 40 else name[:40] + "…")
    arms = tab.get("arms", ["hub", "random-init"])
    if not (isinstance(arms, list) and arms and all(a in ARMS for a in arms)):
        raise r.fail("experiment", "arms", f"a non-empty list drawn from {list(ARMS)}", arms)
    return name, tuple(arms), str(tab.get("description", ""))


def _sweep(r: _Reader, doc: dict, name: str) -> tuple[Path, int, int]:
    tab = r.table(doc, "sweep", {"store", "prefetch", "workers"})
    store = tab.get("store", f"store/{name}")
    if not _plain(store):
        raise r.fail("sweep", "store", "a folder path (no control characters)", store)
    nums = []
    for key, default, low in (("prefetch", 1, 0), ("workers", 1, 1)):
        v = tab.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise r.fail("sweep", key, f"an integer ≥ {low}", v)
        nums.append(v)
    return Path(store), nums[0], nums[1]


def _reference(r: _Reader, doc: dict) -> tuple[tuple[float, ...] | None, str]:
    tab = r.table(doc, "reference", {"profile", "label"})
    prof = tab.get("profile")
    numbers = isinstance(prof, list) and all(isinstance(v, int | float) and math.isfinite(v) for v in prof)
    if prof is not None and not numbers:
        raise r.fail("reference", "profile", "a list of finite numbers, one per block", prof)
    return (tuple(float(v) for v in prof) if prof else None), str(tab.get("label", ""))


SECTIONS = {"experiment", "model", "schedule", "data", "metric", "random_init", "twin", "sweep", "reference"}


def load_manifest(path: str | Path) -> Manifest:
    """Parse and validate ``path``; every problem is one :class:`~trajectory.errors.ManifestError` line."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"manifest {path.name}: malformed TOML: {exc}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"manifest {path}: cannot read: {exc}") from None
    r = _Reader(path)
    unknown = sorted(set(doc) - SECTIONS)
    if unknown:
        raise r.fail(unknown[0], "", f"one of the sections {sorted(SECTIONS)} (unknown section)", unknown[0])
    name, arms, description = _experiment(r, doc)
    repo, config, tok = _model(r, doc)
    store, prefetch, workers = _sweep(r, doc, name)
    profile, label = _reference(r, doc)
    twin, variants, perturbation = twin_tables(r, doc, arms)
    seeds, init, coverage = _random_init(r, doc)
    data = _data(r, doc)
    return Manifest(
        name=name,
        source=path,
        arms=arms,
        repo=repo,
        model_config=config,
        tokenizer=tok,
        schedule=_tokens_per_step(r, doc, _schedule(r, doc)),
        data=data,
        metric=_folds_fit(r, r.typed(MetricConfig, doc, "metric"), data),
        random_init_seeds=seeds,
        init_scheme=init,
        band_coverage=coverage,
        twin=twin,
        twin_variants=variants,
        perturbation=perturbation,
        store_dir=store,
        prefetch=prefetch,
        workers=workers,
        reference_profile=profile,
        reference_label=label,
        description=description,
    )


def quick_manifest(
    repo: str, revisions: list[str], data: DataSpec, metric: MetricConfig, store: str | None, random_init: int = 0
) -> Manifest:
    """A manifest for ``trajectory sweep --repo ORG/NAME --revisions step0,step1,…`` (and ``--random-init N``)."""
    names = [r.strip() for r in revisions if r.strip()]
    steps = [step_of(r) for r in names]
    if not names or None in steps or len(set(steps)) != len(steps):
        raise ConfigError(
            f"--revisions must be names like step0,step1,step1000 (distinct step numbers), got {','.join(revisions)!r}"
        )
    name = repo.rstrip("/").split("/")[-1]
    if not name or name.startswith(".") or "\0" in repo:  # it names the store folder store/<name>
        raise ConfigError(f"--repo {repo!r} does not end in a plain name; give ORG/NAME or a folder path")
    arms = ("local" if Path(repo).is_dir() else "hub",) + (("random-init",) if random_init else ())
    schedule = Schedule(tuple(sorted(zip(steps, names, strict=True))))
    return Manifest(
        name=name,
        source=Path(f"{name}.toml"),
        arms=arms,
        repo=repo,
        schedule=schedule,
        data=data,
        metric=metric,
        random_init_seeds=tuple(range(random_init)),
        store_dir=Path(store or f"store/{name}"),
    )
