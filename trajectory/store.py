"""The results store: one parquet file per finished unit, named by its provenance key.

A *unit* is one (arm, model, seed, revision) measurement: one row per block.
Its key is a hash of everything that decides its numbers (:meth:`trajectory.provenance.Provenance.key`), so
a cache hit is exactly "this provenance was measured before", and a changed
input (a new commit, other evaluation tokens, another metric config) is a miss
that can never return a stale number.

A schedule found among a repo's branches (``[schedule] rule = "branches"``) is recorded when a sweep
plans, in ``schedules/<experiment>.json``: the repo, the rule, when, and each (step, revision, tokens).
Figures, the report and ``verify`` read it back (:func:`with_discovered_schedule`), so they see the
revisions that were measured without contacting the Hub; a record of another repo or rule is ignored.

Writes are atomic: a unit is written to a temporary file in the same folder and
renamed into place, so a crash or ``kill -9`` leaves either the whole unit or
nothing, and two workers that finish the same unit leave one file.  Failures
are recorded as small JSON files beside the units and are cleared when the unit
later succeeds.

A unit counts as stored only when its file reads back and its rows are the unit
its name says (:func:`unit_problem`: every row's provenance hashes to the file's
key, one provenance, each block once).  A sweep moves any other file under a
unit's name aside to ``quarantine/`` (never deletes it), reports it and measures
the unit again; readers skip such files with a warning.

Row schema (``ROW_SCHEMA``): the unit's identity (``experiment, arm, model,
seed, revision, step``), the engine's per-block metrics, and the provenance
(``commit, weights_hash, data_hash, metric_config, code_version, key``) plus
timings.  Arms: ``hub`` (public checkpoints), ``local`` (a directory of
checkpoints), ``random-init`` (untrained, one row set per seed), ``twin``
(our own run from random init, with ``pythia_step`` and ``tokens_seen``), ``run`` (a user's training run
measured in its own loop by :mod:`trajectory.track`, with ``measure_fraction`` and ``measure_fraction_total``).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import polars as pl

from . import names
from .atomic import atomic_bytes, atomic_write
from .config import Manifest, Provenance, Schedule, __version__
from .errors import TrajectoryError, TrajectoryWarning

ROW_SCHEMA: dict[str, pl.DataType] = {
    "experiment": pl.Utf8,
    "arm": pl.Utf8,
    "model": pl.Utf8,
    "seed": pl.Int64,
    "revision": pl.Utf8,
    "step": pl.Int64,
    "pythia_step": pl.Int64,
    "tokens_seen": pl.Int64,
    "block": pl.Int64,
    "r2_lin": pl.Float64,
    "r2_lin_global": pl.Float64,
    "r2_median_dim": pl.Float64,
    "r2_lin_inf": pl.Float64,  # R²_lin extrapolated to unlimited train rows (trajectory.engine.heldout)
    "n_train": pl.Int64,
    "n_test": pl.Int64,
    "cond": pl.Float64,
    "rank": pl.Int64,
    "status": pl.Utf8,
    "commit": pl.Utf8,
    "weights_hash": pl.Utf8,
    "data_hash": pl.Utf8,
    "metric_config": pl.Utf8,
    "metric_core": pl.Utf8,
    "code_version": pl.Utf8,
    "key": pl.Utf8,
    # the evaluation windows: documents they come from, the largest one's share, documents held out
    "eval_documents": pl.Int64,
    "eval_max_doc_share": pl.Float64,
    "heldout_documents": pl.Int64,
    "seconds_fetch": pl.Float64,
    "seconds_measure": pl.Float64,
    # a tracked run's cost (trajectory.track): seconds_measure ÷ the training seconds since the last measurement
    # (seconds_fetch), and all its measuring so far ÷ all its training so far
    "measure_fraction": pl.Float64,
    "measure_fraction_total": pl.Float64,
    # companion metrics (null unless the metric config asks for them; see trajectory.engine.companions, .swap)
    "linearity_score": pl.Float64,
    "linearity_score_heldout": pl.Float64,
    "linearity_score_nores": pl.Float64,
    "linearity_score_nores_heldout": pl.Float64,
    "effective_rank": pl.Int64,
    "r2_lin_cv": pl.Float64,  # the k-fold mean; [r2_lin_cv_low, r2_lin_cv_high] is its 95% interval
    "r2_lin_cv_low": pl.Float64,
    "r2_lin_cv_high": pl.Float64,
    "swap_loss": pl.Float64,
    "swap_dloss": pl.Float64,
    "swap_dppl": pl.Float64,
    "remove_loss": pl.Float64,  # the FFN outputs 0 (trajectory.engine.replaced)
    "remove_dloss": pl.Float64,
    "lowrank_rank": pl.Int64,  # smallest rank within [metric] lowrank_tol nats
    "lowrank_dloss": pl.Float64,
    # per-token residual shares s_t and the SSE's tail concentration (trajectory.engine.tokentail)
    "token_tail_p50": pl.Float64,
    "token_tail_p90": pl.Float64,
    "token_tail_p99": pl.Float64,
    "token_tail_max": pl.Float64,
    "token_tail_top1": pl.Float64,
    "token_tail_top10": pl.Float64,
    "token_tail_pos0_sse": pl.Float64,
    "token_tail_pos0_p50": pl.Float64,
    "token_tail_pos0_p90": pl.Float64,
    "token_tail_pos0_p99": pl.Float64,
    "token_tail_pos0_max": pl.Float64,
    "token_tail_pos0_top1": pl.Float64,
    "token_tail_pos0_top10": pl.Float64,
    "token_tail_rest_p50": pl.Float64,
    "token_tail_rest_p90": pl.Float64,
    "token_tail_rest_p99": pl.Float64,
    "token_tail_rest_max": pl.Float64,
    "token_tail_rest_top1": pl.Float64,
    "token_tail_rest_top10": pl.Float64,
    # why a requested companion has no number ("ok" where it has one; trajectory.engine.measure.COMPANION_KEYS)
    "status_linearity_score": pl.Utf8,
    "status_effective_rank": pl.Utf8,
    "status_ci": pl.Utf8,
    "status_swap": pl.Utf8,
    "status_remove": pl.Utf8,
    "status_lowrank": pl.Utf8,
    "status_token_tail": pl.Utf8,
}
#: Identity of a unit: what its key hashes (:meth:`trajectory.provenance.Provenance.key`).
KEY_FIELDS = Provenance.KEY_FIELDS


@dataclass(frozen=True)
class UnitOutcome:
    """What happened to one unit in a sweep: ``cached`` (skipped), ``done`` or ``failed``."""

    key: str
    label: str
    status: str
    reason: str = ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def unit_problem(path: Path, frame: pl.DataFrame) -> tuple[str, str] | None:
    """Why ``frame`` (read from ``path``) is not the unit its file name says, as (kind, detail); ``None``
    when it is.  Kinds: ``unreadable`` (no rows, or not a unit file) and ``inconsistent`` (rows naming
    another key, several provenances, a block twice, or a key that is not the hash of the rows' own
    provenance, :meth:`~trajectory.provenance.Provenance.key`: an edited, copied or renamed file)."""
    missing = sorted(set(KEY_FIELDS) - set(frame.columns))
    if missing or frame.is_empty():
        return "unreadable", f"not a unit file (no rows, or lacks {missing})"
    # a unit has a dozen rows: plain Python over them is ~10x cheaper than polars' unique()
    rows = frame.select([c for c in (*KEY_FIELDS, "key", "block") if c in frame.columns]).rows(named=True)
    keys = {r.get("key") for r in rows}
    if keys != {path.stem}:
        return "inconsistent", f"its rows name key(s) {sorted(map(str, keys))}, not its file name"
    if len({tuple(r[f] for f in KEY_FIELDS) for r in rows}) != 1:
        return "inconsistent", "it holds rows of several provenances"
    if len({r.get("block") for r in rows}) != len(rows):
        return "inconsistent", "a block appears twice"
    want = Provenance.from_row(rows[0]).key()
    if want != path.stem:
        return "inconsistent", f"its key is not the hash of its rows' provenance ({want}); edited or renamed?"
    return None


def read_unit(path: Path) -> tuple[pl.DataFrame | None, tuple[str, str] | None]:
    """(the file's rows, or ``None``; :func:`unit_problem`, or ``unreadable`` when it is not parquet)."""
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # any parquet error: the file is reported, never fatal
        return None, ("unreadable", _first_line(exc))
    return frame, unit_problem(path, frame)


NOT_MEASURED = "not measured at this step"


def not_measured_here(frame: pl.DataFrame) -> pl.DataFrame:
    """``status_<companion>`` says ``NOT_MEASURED`` on the rows of steps measured without a companion that
    other rows have (``[metric] companion_points``); a companion no row has stays null."""
    asked = [c for c in frame.columns if c.startswith("status_") and frame[c].null_count() < frame.height]
    return frame.with_columns(pl.col(c).fill_null(NOT_MEASURED) for c in asked)


class Store:
    """A folder of unit files: ``units/<key>.parquet``, ``failed/<key>.json`` and ``quarantine/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.units = self.root / "units"
        self.failed = self.root / "failed"
        self.quarantine = self.root / "quarantine"
        #: (file moved aside, why) in this process, for the sweep's summary
        self.moved: list[tuple[Path, str]] = []
        self._good: dict[str, tuple[int, int, int]] = {}  # key → (inode, size, mtime) of a file checked good

    def _ensure(self) -> None:
        self.units.mkdir(parents=True, exist_ok=True)
        self.failed.mkdir(parents=True, exist_ok=True)

    def unit_path(self, key: str) -> Path:
        """``units/<key>.parquet``; ``key`` must be a hex digest, so no key can name a path outside the store."""
        return self.units / f"{names.store_key(key)}.parquet"

    def unit_files(self) -> list[Path]:
        """The unit files, sorted; not the ``.tmp-*`` a write killed half-way leaves (never a result)."""
        if not self.units.is_dir():
            return []
        return sorted(p for p in self.units.glob("*.parquet") if not p.name.startswith("."))

    def has(self, key: str) -> bool:
        """Is the unit stored: its file reads back and is the unit ``key`` names (:func:`unit_problem`)?

        A file that is not is moved to ``quarantine/`` (and listed in :attr:`moved`), so the unit is
        measured again.  A file checked good is not read again while its inode, size and mtime stay.
        """
        path = self.unit_path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._good.get(key) == stamp:
            return True
        _, problem = read_unit(path)
        if problem is None:
            self._good[key] = stamp
            return True
        if self.move_aside(path, problem[1], st.st_ino) is None:  # replaced or moved meanwhile: look again
            return self.has(key)
        return False

    def move_aside(self, path: Path, reason: str, inode: int | None = None) -> Path | None:
        """Move ``path`` into ``quarantine/`` under a name no other file has (nothing is ever overwritten).

        ``inode``: the file that was judged; if another process has replaced it since (a fresh unit
        written over it), that new file stays where it is.
        """
        self.quarantine.mkdir(parents=True, exist_ok=True)
        for n in range(1000):
            dest = self.quarantine / (path.name if n == 0 else f"{path.stem}.{n}{path.suffix}")
            try:
                os.link(path, dest)  # fails if dest exists: never replaces an earlier quarantined file
            except FileExistsError:
                continue
            except FileNotFoundError:
                return None  # another process moved it first
            if inode is not None and dest.stat().st_ino != inode:
                dest.unlink()  # a second name of the new file: removing it removes nothing
                return None
            path.unlink(missing_ok=True)
            self.moved.append((dest, reason))
            return dest
        raise OSError(f"store {self.root}: too many quarantined copies of {path.name}")

    def write_unit(self, key: str, rows: list[dict]) -> Path:
        """Write one unit's rows atomically; clears a recorded failure of the same key."""
        self._ensure()
        frame = pl.DataFrame(
            [{**{c: None for c in ROW_SCHEMA}, **r, "key": key, "code_version": __version__} for r in rows],
            schema_overrides=ROW_SCHEMA,
            strict=False,
        )
        path = self.unit_path(key)
        atomic_write(path, frame.write_parquet)
        self.forget_failure(key)
        return path

    def record_failure(self, key: str, unit: dict, reason: str) -> None:
        self._ensure()
        payload = json.dumps({**unit, "key": key, "reason": reason}, default=str)
        atomic_bytes(self.failed / f"{names.store_key(key)}.json", payload)

    def forget_failure(self, key: str) -> None:
        (self.failed / f"{names.store_key(key)}.json").unlink(missing_ok=True)

    def failures(self) -> list[dict]:
        """Every failure record; unreadable ones, and ones whose ``key`` is not a hex key, are reported and skipped."""
        out = []
        for path in sorted(self.failed.glob("*.json")) if self.failed.is_dir() else []:
            try:
                record = json.loads(path.read_text())
                if not isinstance(record, dict) or not names.KEY.fullmatch(str(record.get("key"))):
                    raise ValueError("not a failure record")
                out.append(record)
            except (OSError, ValueError):
                warnings.warn(
                    f"store {self.root}: unreadable failure record {path.name}, skipped",
                    TrajectoryWarning,
                    stacklevel=2,
                )
        return out

    def read(self) -> pl.DataFrame:
        """Every stored row; files that are not the unit their name says (:func:`unit_problem`) are
        reported and skipped."""
        frames = []
        for path in self.unit_files():
            frame, problem = read_unit(path)
            try:
                if problem is not None:
                    raise ValueError(problem[1])
                columns = [
                    pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c) for c, t in ROW_SCHEMA.items()
                ]
                frames.append(frame.select(columns))
            except Exception as exc:  # a truncated, foreign, copied or edited file must not stop the reader
                warnings.warn(
                    f"store {self.root}: skipped {path.name}: {_first_line(exc)}", TrajectoryWarning, stacklevel=2
                )
        if not frames:
            return pl.DataFrame(schema=ROW_SCHEMA)
        return not_measured_here(pl.concat(frames, how="vertical"))

    # -- a discovered schedule -------------------------------------------------------------------------------
    def schedule_path(self, experiment: str) -> Path:
        return names.inside(self.root / "schedules", f"{experiment}.json", "experiment name")

    def write_schedule(self, manifest: Manifest, schedule: Schedule) -> Path:
        """Record the schedule a sweep of ``manifest`` discovered (see the module docstring)."""
        record = {
            "experiment": manifest.name,
            "model": manifest.repo,
            "rule": asdict(schedule.rule),
            "discovered": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "points": [
                {"step": step, "revision": rev, "tokens": schedule.tokens_at(rev)} for step, rev in schedule.points
            ],
        }
        path = self.schedule_path(manifest.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_bytes(path, json.dumps(record, indent=1))

    def read_schedule(self, manifest: Manifest) -> Schedule | None:
        """The schedule last discovered for ``manifest``'s repo and rule, or None (none recorded, or another
        repo or rule; an unreadable record is reported and ignored)."""
        rule = manifest.schedule.rule
        if rule is None:
            return None
        path = self.schedule_path(manifest.name)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            # as JSON keeps it (tuples become lists), and a record written before a rule field existed has its default
            wanted = json.loads(json.dumps(asdict(rule)))
            if record["model"] != manifest.repo or {**wanted, **record["rule"]} != wanted:
                return None
            points = [(int(p["step"]), names.relative_name(p["revision"], "revision")) for p in record["points"]]
            tokens = [None if p["tokens"] is None else int(p["tokens"]) for p in record["points"]]
            if any(a[0] >= b[0] for a, b in zip(points, points[1:])):
                raise ValueError("steps not in increasing order")
        except (OSError, ValueError, KeyError, TypeError, TrajectoryError) as exc:
            warnings.warn(f"store {self.root}: unreadable schedule record {path.name} ({exc}), ignored", stacklevel=2)
            return None
        return Schedule(tuple(points), tuple(tokens), rule) if points else None


def with_discovered_schedule(manifest: Manifest) -> Manifest:
    """``manifest`` with the schedule its last sweep discovered among the repo's branches, from its store;
    unchanged when its schedule is listed, or nothing has been discovered yet."""
    found = Store(manifest.store_dir).read_schedule(manifest)
    return manifest if found is None else replace(manifest, schedule=found)
