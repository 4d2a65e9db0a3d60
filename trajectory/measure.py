"""R²_lin of every block of one model: split, probe, fit, score.

The split is by sequence: a seeded permutation of the windows puts
``round(heldout_frac · n_seq)`` of them in the held-out set (``split="random"``),
or the last ones (``split="tail"``, the paper's protocol).  The affine map is
fitted on train rows only and scored on held-out rows only.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .adapters import adapter_for
from .errors import TrajectoryError
from .probe import FFNProbe
from .tokens import EvalTokens

#: Bumped whenever a change to the maths could change a stored number.
METRIC_VERSION = 1
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class MetricConfig:
    """How R²_lin is computed.  ``batch_tokens`` does not change results, so it is not hashed."""

    heldout_frac: float = 0.2
    seed: int = 0
    split: str = "random"
    rcond: float = 1e-6
    compute_dtype: str = "float64"
    batch_tokens: int = 8192

    def __post_init__(self) -> None:
        if not 0.0 < self.heldout_frac < 1.0:
            raise TrajectoryError(f"heldout-frac must lie in (0, 1), got {self.heldout_frac}")
        if self.split not in ("random", "tail"):
            raise TrajectoryError(f"split must be 'random' or 'tail', got {self.split!r}")
        if self.compute_dtype not in _DTYPES:
            raise TrajectoryError(f"compute_dtype must be one of {sorted(_DTYPES)}, got {self.compute_dtype!r}")

    def digest(self) -> str:
        fields = asdict(self)
        fields.pop("batch_tokens")
        fields["metric_version"] = METRIC_VERSION
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def split_by_sequence(n_seq: int, cfg: MetricConfig) -> np.ndarray:
    """Boolean (n_seq,): True for held-out windows; at least one window on each side."""
    if n_seq < 2:
        raise TrajectoryError(f"need at least 2 windows to split train from held-out, got {n_seq}")
    n_test = min(max(1, round(n_seq * cfg.heldout_frac)), n_seq - 1)
    is_test = np.zeros(n_seq, dtype=bool)
    if cfg.split == "tail":
        is_test[n_seq - n_test :] = True
    else:
        is_test[np.random.default_rng(cfg.seed).permutation(n_seq)[:n_test]] = True
    return is_test


def required_train_tokens(d_model: int) -> int:
    """The fit has d_model + 1 parameters per output; one more row makes it over-determined."""
    return d_model + 2


def check_budget(tokens: EvalTokens, is_test: np.ndarray, d_model: int) -> None:
    n_train = int((~is_test).sum()) * tokens.ids.shape[1]
    need = required_train_tokens(d_model)
    if n_train < need:
        total = math.ceil(need / (1.0 - is_test.mean()))
        raise TrajectoryError(
            f"{n_train} train tokens, but the affine fit needs at least {need} (d_model+2); "
            f"raise --tokens to about {total} or more"
        )


def _finalize(block: int, stats, rcond: float) -> dict:
    moments = (stats.train.sxx, stats.train.sxy, stats.test.syy, stats.test.sxy)
    if not all(np.isfinite(m).all() for m in moments):
        nan = float("nan")
        return {"block": block, "r2_lin": nan, "r2_lin_global": nan, "r2_median_dim": nan,
                "n_train": stats.train.n, "n_test": stats.test.n, "cond": nan, "rank": 0,
                "status": "nonfinite activations"}
    return {"block": block, **stats.finalize(rcond), "status": "ok"}


def measure_blocks(model, tokens: EvalTokens, cfg: MetricConfig, device: str = "cpu",
                   progress=None) -> list[dict]:
    """One flat dict per block: r2_lin, r2_lin_global, r2_median_dim, n_train, n_test, cond, rank, status."""
    adapter = adapter_for(model.config.model_type)
    is_test = split_by_sequence(tokens.ids.shape[0], cfg)
    check_budget(tokens, is_test, model.config.hidden_size)
    probe = FFNProbe(model, adapter, _DTYPES[cfg.compute_dtype])
    batch = max(1, cfg.batch_tokens // tokens.ids.shape[1])
    stats = probe.run(tokens.ids, is_test, batch, device=device, progress=progress)
    return [_finalize(i, s, cfg.rcond) for i, s in enumerate(stats)]
