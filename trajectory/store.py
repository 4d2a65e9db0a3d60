"""The results store: one parquet file per finished unit, named by its provenance key.

A *unit* is one (arm, model, seed, revision) measurement: one row per block.
Its key is a hash of everything that decides its numbers (:meth:`trajectory.config.Provenance.key`), so
a cache hit is exactly "this provenance was measured before", and a changed
input (a new commit, other evaluation tokens, another metric config) is a miss
that can never return a stale number.

Writes are atomic: a unit is written to a temporary file in the same folder and
renamed into place, so a crash or ``kill -9`` leaves either the whole unit or
nothing, and two workers that finish the same unit leave one file.  Failures
are recorded as small JSON files beside the units and are cleared when the unit
later succeeds.

Row schema (``ROW_SCHEMA``): the unit's identity (``experiment, arm, model,
seed, revision, step``), the engine's per-block metrics, and the provenance
(``commit, weights_hash, data_hash, metric_config, code_version, key``) plus
timings.  Arms: ``hub`` (public checkpoints), ``local`` (a directory of
checkpoints), ``random-init`` (untrained, one row set per seed), ``twin``
(our own run from random init, with ``pythia_step`` and ``tokens_seen``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from . import names
from .atomic import atomic_bytes, atomic_write
from .config import Provenance, __version__

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
    "code_version": pl.Utf8,
    "key": pl.Utf8,
    "seconds_fetch": pl.Float64,
    "seconds_measure": pl.Float64,
    # companion metrics (null unless the metric config asks for them; see trajectory.companions, .swap)
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
    # why a requested companion has no number ("ok" where it has one; trajectory.engine.measure.COMPANION_KEYS)
    "status_linearity_score": pl.Utf8,
    "status_effective_rank": pl.Utf8,
    "status_ci": pl.Utf8,
    "status_swap": pl.Utf8,
}
#: Identity of a unit: what its key hashes (:meth:`trajectory.config.Provenance.key`).
KEY_FIELDS = Provenance.KEY_FIELDS


@dataclass(frozen=True)
class UnitOutcome:
    """What happened to one unit in a sweep: ``cached`` (skipped), ``done`` or ``failed``."""

    key: str
    label: str
    status: str
    reason: str = ""


class Store:
    """A folder of unit files: ``units/<key>.parquet`` and ``failed/<key>.json``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.units = self.root / "units"
        self.failed = self.root / "failed"

    def _ensure(self) -> None:
        self.units.mkdir(parents=True, exist_ok=True)
        self.failed.mkdir(parents=True, exist_ok=True)

    def unit_path(self, key: str) -> Path:
        """``units/<key>.parquet``; ``key`` must be a hex digest, so no key can name a path outside the store."""
        return self.units / f"{names.store_key(key)}.parquet"

    def has(self, key: str) -> bool:
        return self.unit_path(key).is_file()

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
                warnings.warn(f"store {self.root}: unreadable failure record {path.name}, skipped", stacklevel=2)
        return out

    def read(self) -> pl.DataFrame:
        """Every stored row; unreadable or foreign files are reported and skipped."""
        frames = []
        for path in sorted(self.units.glob("*.parquet")) if self.units.is_dir() else []:
            try:
                frame = pl.read_parquet(path)
                missing = set(KEY_FIELDS) - set(frame.columns)
                if missing:
                    raise ValueError(f"missing columns {sorted(missing)}")
                frames.append(
                    frame.select(
                        [
                            pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
                            for c, t in ROW_SCHEMA.items()
                        ]
                    )
                )
            except Exception as exc:  # a truncated or foreign file must not stop the reader
                warnings.warn(f"store {self.root}: skipped {path.name}: {str(exc).splitlines()[0]}", stacklevel=2)
        if not frames:
            return pl.DataFrame(schema=ROW_SCHEMA)
        return pl.concat(frames, how="vertical")
