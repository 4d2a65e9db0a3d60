"""The ``token_tail`` companion: how a block's held-out residual is spread over tokens, in flat memory.

For a held-out row t of a block, with ``r_t = y_t − Wᵀx_t − b`` the residual of the affine fit and ȳ the
held-out mean of y, the **per-token non-linear share** is

    s_t = ‖r_t‖² / ‖y_t − ȳ‖²,

the part of the token's deviation from the mean that the affine map leaves.  The block's SSE is
``Σ_t ‖r_t‖²``; its **tail concentration** ``top1`` (``top10``) is the share of that SSE carried by the 1%
(10%) of held-out tokens with the largest ``‖r_t‖²`` (``ceil(frac · n)`` tokens).  Both are given for all
held-out tokens, for position 0 of each window (``pos0``) and for the other positions (``rest``);
``token_tail_pos0_sse`` is the share of the block's SSE on position-0 tokens.

Nothing here needs an extra forward pass: :class:`~trajectory.engine.heldout.HeldoutResiduals` hands every
held-out row's ``‖r_t‖²`` and its target ``y_t − c`` (c the fixed train shift) to :class:`TokenTail`.

**Tail shares: a log histogram, bounded.**  ``‖r_t‖²`` goes into bins of ratio ``ρ = 2^(1/64)`` (count and
float64 sum per bin, 2⁻¹⁰⁰ … 2¹⁰⁰, zeros and underflow in bin 0).  The top k tokens are whole bins from the
top plus j tokens of one boundary bin, counted at that bin's mean; the j largest values of a bin lie in
``[j·mean, j·hi]`` with ``hi ≤ ρ·lo ≤ ρ·mean``, so a share's relative error is at most ``ρ − 1 = 1.09%``
(exact when the boundary falls between bins).  The bin sums add up to the block's SSE (float64, summation
order only).

**Quantiles and max of s_t: a seeded reservoir, exact on its rows.**  ȳ is known only after the last
held-out row, so ``s_t`` cannot be formed on the way.  Each position class keeps a uniform reservoir
(Vitter's algorithm R) of :data:`SAMPLE` rows, storing ``‖r_t‖²`` and ``y_t − c`` (float32); at the end
``‖y_t − ȳ‖² = ‖(y_t − c) − (ȳ − c)‖²`` gives each sampled row's exact ``s_t``.  A class with at most
:data:`SAMPLE` rows is kept whole, so its quantiles are exact.  Otherwise the sample's empirical CDF is
within ``ε = √(ln(2/α) / 2m)`` of the class's at every point with probability ``1 − α`` (DKW; ε = 0.042 at
m = 1024, α = 0.05): a reported p-quantile is a true quantile of rank within ``p ± ε``.  The overall
quantiles weight the two samples by their class sizes (rank error ≤ the larger ε).  The max is the
largest sampled ``s_t``: a lower bound on the true max (exact when every row is kept).
Memory: ``2 · SAMPLE · (d + 2)`` floats and the histograms, whatever the number of held-out tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: Rows kept per position class (position 0, the other positions) for the quantiles of s_t.
SAMPLE = 1024
#: Log-histogram resolution: bins per factor of two, and the exponent range covered.
BINS_PER_OCTAVE, LOW_EXP, HIGH_EXP = 64, -100, 100
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
TOP = {"top1": 0.01, "top10": 0.10}
CLASSES = ("pos0", "rest")


def dkw_epsilon(m: int, alpha: float = 0.05) -> float:
    """DKW bound on the sup distance between a sample's empirical CDF and the population's."""
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * m))


class LogHistogram:
    """Counts and float64 sums of non-negative values in log bins of ratio 2^(1/BINS_PER_OCTAVE)."""

    def __init__(self) -> None:
        n_bins = (HIGH_EXP - LOW_EXP) * BINS_PER_OCTAVE + 2
        self.count, self.total = np.zeros(n_bins, dtype=np.int64), np.zeros(n_bins)

    def update(self, values: np.ndarray) -> None:
        with np.errstate(divide="ignore"):
            raw = np.floor((np.log2(values) - LOW_EXP) * BINS_PER_OCTAVE) + 1
        idx = np.clip(np.nan_to_num(raw, nan=0.0, neginf=0.0), 0, len(self.count) - 1).astype(np.int64)
        self.count += np.bincount(idx, minlength=len(self.count))
        self.total += np.bincount(idx, weights=values, minlength=len(self.count))

    @property
    def n(self) -> int:
        return int(self.count.sum())

    @property
    def sum(self) -> float:
        return float(self.total.sum())

    def top_sum(self, k: int) -> float:
        """Σ of the k largest values: whole bins from the top, then k' values of the boundary bin at its mean."""
        count, total = self.count[::-1], self.total[::-1]
        before = np.cumsum(count) - count  # values in the bins above each bin
        edge = int(np.searchsorted(np.cumsum(count), k))  # the bin holding the k-th largest value
        if edge >= len(count):
            return float(total.sum())
        rest = k - int(before[edge])
        return float(total[:edge].sum()) + rest * float(total[edge]) / max(int(count[edge]), 1)

    def top_share(self, frac: float) -> float:
        """Share of the sum carried by the largest ``ceil(frac · n)`` values (module docstring: ≤ ρ−1 relative)."""
        total = self.sum
        return self.top_sum(math.ceil(frac * self.n)) / total if self.n and total > 0 else float("nan")


class Reservoir:
    """A seeded uniform sample (algorithm R) of ``size`` rows: ``‖r_t‖²`` and the row's ``y_t − c``."""

    def __init__(self, size: int, d: int, rng: np.random.Generator) -> None:
        self.size, self.rng, self.seen = size, rng, 0
        self.q, self.y = np.zeros(size), np.zeros((size, d), dtype=np.float32)

    def update(self, q: np.ndarray, yc: torch.Tensor) -> None:
        """Offer rows in order: row i (0-based over every row seen) enters with probability size/(i+1)."""
        n = len(q)
        index = np.arange(self.seen, self.seen + n)
        slot = np.where(index < self.size, index, self.rng.integers(0, index + 1) if n else index)
        take = np.flatnonzero(slot < self.size)
        # a later row overwrites an earlier one in the same slot, as one-by-one algorithm R would
        last = len(take) - 1 - np.unique(slot[take][::-1], return_index=True)[1]
        take = take[last]
        self.q[slot[take]] = q[take]
        self.y[slot[take]] = yc[torch.as_tensor(take, device=yc.device)].float().cpu().numpy()
        self.seen += n

    def shares(self, mean_shift: np.ndarray) -> np.ndarray:
        """Exact ``s_t`` of the sampled rows, given ``ȳ − c``."""
        kept = min(self.seen, self.size)
        dev = self.y[:kept].astype(np.float64) - mean_shift
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.q[:kept] / np.einsum("ij,ij->i", dev, dev)


def weighted_quantile(values: list[np.ndarray], weights: list[float], p: float) -> float:
    """The p-quantile of a mixture of samples, sample i's rows each weighing ``weights[i]``."""
    v = np.concatenate(values)
    w = np.concatenate([np.full(len(x), wt) for x, wt in zip(values, weights)])
    ok = np.isfinite(v)
    v, w = v[ok], w[ok]
    if not len(v):
        return float("nan")
    order = np.argsort(v)
    cdf = np.cumsum(w[order]) / w.sum()
    return float(v[order][min(int(np.searchsorted(cdf, p)), len(v) - 1)])


@dataclass(frozen=True)
class TailSpec:
    """What a block's :class:`TokenTail` needs besides its width: the window length (position 0 is every
    ``seq_len``-th row) and the metric seed, whose child ``(1,)`` seeds the reservoirs (child 0 deals folds)."""

    seq_len: int
    seed: int = 0
    size: int = SAMPLE

    def make(self, d_out: int) -> TokenTail:
        return TokenTail(d_out, self)


class TokenTail:
    """Per position class (0, other), a log histogram of ``‖r_t‖²`` and a reservoir of rows (module docstring).
    Every block gets the same seed and the same rows in order, so every block samples the same tokens."""

    def __init__(self, d_out: int, spec: TailSpec) -> None:
        child = np.random.SeedSequence(spec.seed, spawn_key=(1,))
        rngs = [np.random.default_rng(s) for s in child.spawn(len(CLASSES))]
        seq_len, size = spec.seq_len, spec.size
        self.seq_len = seq_len
        self.hist = {c: LogHistogram() for c in CLASSES}
        self.sample = {c: Reservoir(size, d_out, rng) for c, rng in zip(CLASSES, rngs)}

    def update(self, q: torch.Tensor, yc: torch.Tensor, rows: torch.Tensor) -> None:
        """Add rows: ``q`` (m,) float64 ``‖r_t‖²``, ``yc`` (m, d) ``y_t − c``, ``rows`` (m,) flat row indices
        ``window · seq_len + position``."""
        first = (rows % self.seq_len == 0).cpu().numpy()
        q_np = q.cpu().numpy()
        for name, mask in zip(CLASSES, (first, ~first)):
            picked = np.flatnonzero(mask)
            self.hist[name].update(q_np[picked])
            self.sample[name].update(q_np[picked], yc[torch.as_tensor(picked, device=yc.device)])

    def finalize(self, mean_shift: np.ndarray) -> dict[str, float]:
        """The ``token_tail_*`` keys, given ``ȳ − c`` (the held-out mean less the shift)."""
        out, shares, weights = {}, [], []
        for name in CLASSES:
            s, sample = self.sample[name].shares(mean_shift), self.sample[name]
            out.update(_summary(f"token_tail_{name}", s, self.hist[name]))
            shares.append(s)
            weights.append(sample.seen / max(len(s), 1))
        every = LogHistogram()
        every.count = self.hist["pos0"].count + self.hist["rest"].count
        every.total = self.hist["pos0"].total + self.hist["rest"].total
        for key, p in QUANTILES.items():
            out[f"token_tail_{key}"] = weighted_quantile(shares, weights, p)
        finite = [x[np.isfinite(x)] for x in shares]
        out["token_tail_max"] = max((float(x.max()) for x in finite if len(x)), default=float("nan"))
        out.update({f"token_tail_{key}": every.top_share(f) for key, f in TOP.items()})
        out["token_tail_pos0_sse"] = self.hist["pos0"].sum / every.sum if every.sum > 0 else float("nan")
        return out


def _summary(prefix: str, s: np.ndarray, hist: LogHistogram) -> dict[str, float]:
    """One class's quantiles and max of s_t (from its sample) and tail shares (from its histogram)."""
    s = s[np.isfinite(s)]
    out = {f"{prefix}_{k}": float(np.quantile(s, p, method="inverted_cdf")) if len(s) else float("nan")
           for k, p in QUANTILES.items()}  # fmt: skip
    out[f"{prefix}_max"] = float(s.max()) if len(s) else float("nan")
    out.update({f"{prefix}_{k}": hist.top_share(f) for k, f in TOP.items()})
    return out


#: The keys :meth:`TokenTail.finalize` gives, in table order.
KEYS = (
    *(f"token_tail_{k}" for k in (*QUANTILES, "max", *TOP)),
    "token_tail_pos0_sse",
    *(f"token_tail_{c}_{k}" for c in CLASSES for k in (*QUANTILES, "max", *TOP)),
)
