"""Experiments as data: ``manifests/<name>.toml`` parsed into typed, validated dataclasses.

Every error names the file, the field and what was expected, in one line, e.g.
``manifest pythia-160m.toml: [data] 'tokens' must be an integer ≥ 2, got 'many'``.
Unknown fields are errors too (a typo must not silently fall back to a default).

Sections: ``[experiment]`` (name, arms), ``[model]`` (Hub ``repo`` or local
``path``, or an inline ``config`` table for models that exist only as an
architecture; ``tokenizer``), ``[schedule]`` (an explicit ``revisions`` list or
the Pythia rule), ``[data]`` (evaluation text), ``[metric]``, ``[random_init]``
(seeds), ``[twin]`` (training settings), ``[sweep]`` (store, prefetch, workers),
``[reference]`` (a published final-step profile to draw).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import TrajectoryError
from .measure import MetricConfig

ARMS = ("hub", "local", "random-init", "twin")


def pythia_steps(log_until: int = 512, every: int = 1000, last: int = 143_000) -> list[int]:
    """Pythia's 154 checkpoints: 0, the powers of two up to ``log_until``, then every ``every`` to ``last``."""
    steps, p = [0], 1
    while p <= log_until:
        steps.append(p)
        p *= 2
    return steps + list(range(every, last + 1, every))


@dataclass(frozen=True)
class Schedule:
    """Training steps to measure, and how a step is named as a revision."""

    steps: tuple[int, ...]
    revision_format: str = "step{step}"

    def revisions(self) -> list[str]:
        return [self.revision_format.format(step=s) for s in self.steps]


@dataclass(frozen=True)
class DataSpec:
    """Evaluation text: ``kind`` in text | parquet | dataset | embedded, and the window budget."""

    kind: str = "embedded"
    path: str = ""
    column: str = "text"
    tokens: int = 16_384
    seq_len: int = 128


@dataclass(frozen=True)
class TwinSpec:
    """Training of the random-init twin (Pythia's optimiser shape; see ``trajectory.twin``)."""

    steps: int = 2000
    batch_tokens: int = 2048
    seq_len: int = 128
    lr: float = 1e-3
    warmup_frac: float = 0.01
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip: float = 1.0
    seed: int = 0
    save_checkpoints: bool = False
    train_data: str = "embedded"


@dataclass(frozen=True)
class Manifest:
    """One experiment."""

    name: str
    source: Path
    arms: tuple[str, ...]
    repo: str | None = None
    model_config: dict[str, Any] | None = None
    tokenizer: str | None = None
    schedule: Schedule = field(default_factory=lambda: Schedule(tuple(pythia_steps())))
    data: DataSpec = field(default_factory=DataSpec)
    metric: MetricConfig = field(default_factory=MetricConfig)
    random_init_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    twin: TwinSpec | None = None
    store_dir: Path = Path("store")
    prefetch: int = 1
    workers: int = 1
    reference_profile: tuple[float, ...] | None = None
    reference_label: str = ""
    description: str = ""


class _Reader:
    """Validates one manifest's tables, naming the file and field in every error."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, section: str, key: str, expected: str, got: Any) -> TrajectoryError:
        where = f"[{section}] '{key}'" if key else f"[{section}]"
        return TrajectoryError(f"manifest {self.path.name}: {where} must be {expected}, got {got!r}")

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
        except TrajectoryError as exc:
            raise TrajectoryError(f"manifest {self.path.name}: [{section}] {exc}") from None

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


def _schedule(r: _Reader, doc: dict) -> Schedule:
    tab = r.table(doc, "schedule", {"revisions", "steps", "rule", "log_until", "every", "last", "revision_format"})
    fmt = tab.get("revision_format", "step{step}")
    if not isinstance(fmt, str) or "{step}" not in fmt:
        raise r.fail("schedule", "revision_format", "a string containing '{step}'", fmt)
    if "steps" in tab:
        steps = tab["steps"]
        if not (isinstance(steps, list) and steps and all(isinstance(s, int) and s >= 0 for s in steps)):
            raise r.fail("schedule", "steps", "a non-empty list of non-negative integers", steps)
        return Schedule(tuple(sorted(set(steps))), fmt)
    rule = tab.get("rule", "pythia")
    if rule != "pythia":
        raise r.fail("schedule", "rule", "'pythia' (or give 'steps')", rule)
    nums = {k: tab.get(k, d) for k, d in (("log_until", 512), ("every", 1000), ("last", 143_000))}
    for k, v in nums.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise r.fail("schedule", k, "a positive integer", v)
    return Schedule(tuple(pythia_steps(**nums)), fmt)


def _data(r: _Reader, doc: dict) -> DataSpec:
    tab = r.table(doc, "data", {"text_file", "parquet", "dataset", "embedded", "column", "tokens", "seq_len"})
    kinds = [k for k in ("text_file", "parquet", "dataset", "embedded") if k in tab]
    if len(kinds) > 1:
        raise r.fail("data", kinds[1], f"absent when '{kinds[0]}' is given (one source only)", tab[kinds[1]])
    kind = kinds[0] if kinds else "embedded"
    path = tab.get(kind, "")
    if kind != "embedded" and (not isinstance(path, str) or not path):
        raise r.fail("data", kind, "a non-empty string", path)
    spec = r.typed(DataSpec, {"data": {k: v for k, v in tab.items() if k in ("column", "tokens", "seq_len")}}, "data")
    if spec.seq_len < 2 or spec.tokens < spec.seq_len:
        raise r.fail("data", "tokens", f"an integer ≥ seq_len ({spec.seq_len}) ≥ 2", spec.tokens)
    base = {"text_file": "text"}.get(kind, kind)
    if base in ("text", "parquet") and not Path(path).is_absolute():
        path = str(r.path.parent / path)  # relative to the manifest's own folder
    return DataSpec(base, path if kind != "embedded" else str(tab.get("embedded") or ""), spec.column,
                    spec.tokens, spec.seq_len)


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
    if repo is None and config is None:
        raise r.fail("model", "repo", "given (or an inline 'config' table)", None)
    tok = tab.get("tokenizer")
    if tok is not None and not isinstance(tok, str):
        raise r.fail("model", "tokenizer", "a string", tok)
    return repo, config, tok


def _seeds(r: _Reader, doc: dict) -> tuple[int, ...]:
    tab = r.table(doc, "random_init", {"seeds"})
    seeds = tab.get("seeds", [0, 1, 2, 3, 4])
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 0:
        seeds = list(range(seeds))
    if not (isinstance(seeds, list) and all(isinstance(s, int) and s >= 0 for s in seeds)):
        raise r.fail("random_init", "seeds", "a count or a list of non-negative integers", seeds)
    return tuple(seeds)


def _experiment(r: _Reader, doc: dict) -> tuple[str, tuple[str, ...], str]:
    tab = r.table(doc, "experiment", {"name", "arms", "description"})
    name = tab.get("name", r.path.stem)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise r.fail("experiment", "name", "a plain name (no '/')", name)
    arms = tab.get("arms", ["hub", "random-init"])
    if not (isinstance(arms, list) and arms and all(a in ARMS for a in arms)):
        raise r.fail("experiment", "arms", f"a non-empty list drawn from {list(ARMS)}", arms)
    return name, tuple(arms), str(tab.get("description", ""))


def _sweep(r: _Reader, doc: dict, name: str) -> tuple[Path, int, int]:
    tab = r.table(doc, "sweep", {"store", "prefetch", "workers"})
    store = tab.get("store", f"store/{name}")
    if not isinstance(store, str) or not store:
        raise r.fail("sweep", "store", "a folder path", store)
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
    if prof is not None and not (isinstance(prof, list) and all(isinstance(v, int | float) for v in prof)):
        raise r.fail("reference", "profile", "a list of numbers, one per block", prof)
    return (tuple(float(v) for v in prof) if prof else None), str(tab.get("label", ""))


SECTIONS = {"experiment", "model", "schedule", "data", "metric", "random_init", "twin", "sweep", "reference"}


def load_manifest(path: str | Path) -> Manifest:
    """Parse and validate ``path``; every problem is one :class:`TrajectoryError` line."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrajectoryError(f"manifest not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrajectoryError(f"manifest {path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TrajectoryError(f"manifest {path.name}: malformed TOML: {exc}") from None
    r = _Reader(path)
    unknown = sorted(set(doc) - SECTIONS)
    if unknown:
        raise r.fail(unknown[0], "", f"one of the sections {sorted(SECTIONS)} (unknown section)", unknown[0])
    name, arms, description = _experiment(r, doc)
    repo, config, tok = _model(r, doc)
    store, prefetch, workers = _sweep(r, doc, name)
    profile, label = _reference(r, doc)
    twin = r.typed(TwinSpec, doc, "twin") if ("twin" in doc or "twin" in arms) else None
    return Manifest(
        name=name, source=path, arms=arms, repo=repo, model_config=config, tokenizer=tok,
        schedule=_schedule(r, doc), data=_data(r, doc), metric=r.typed(MetricConfig, doc, "metric"),
        random_init_seeds=_seeds(r, doc), twin=twin, store_dir=store, prefetch=prefetch, workers=workers,
        reference_profile=profile, reference_label=label, description=description,
    )
