"""Streaming sufficient statistics for the affine least-squares fit, and R²_lin.

For one block and one split we see rows ``x ∈ R^d`` (the FFN input) and
``y ∈ R^k`` (the FFN output).  :class:`MomentAccumulator` keeps, in float64,

* ``n``        the number of rows,
* ``mx, my``   the means of x and y,
* ``Sxx``      Σ (x-mx)(x-mx)ᵀ            (d × d),
* ``Sxy``      Σ (x-mx)(y-my)ᵀ            (d × k),
* ``syy``      Σ (y-my)²  per output dim  (k,),

which are exactly the sufficient statistics ``[X,1]ᵀ[X,1]``, ``[X,1]ᵀY``,
``Σy`` and ``Σy²`` rewritten about the mean.  Each batch is shifted by a fixed
point close to the mean before its product, which keeps the Gram matrix free of
the large mean term that would otherwise cost digits; the centred moments are
recovered exactly from the shifted sums, and two accumulators are merged with
Chan et al.'s pairwise update.  Memory never grows with the number of tokens and
the result does not depend on how the tokens were batched (up to rounding).

The per-batch products run in the dtypes that ``precision`` names
(:data:`PRECISIONS`) and are summed in float64: ``float64`` throughout;
``mixed`` (the default), the Gram product XᵀX in float64 and the cross product
XᵀY in float32, for the reason given in :class:`MomentAccumulator`; or
``float32`` throughout, which is fast but loses the LayerNorm null direction
to rounding and is wrong on ill-conditioned inputs.  The choice is hashed into
the metric digest.

:func:`fit_affine` solves ``min_{W,b} Σ ||y - Wᵀx - b||²`` on the train
statistics.  With centred statistics the intercept drops out (``b = my - Wᵀmx``,
unpenalised) and ``W = Sxx⁺ Sxy``.  ``Sxx`` is singular by construction after a
LayerNorm (each row of its output lies on a hyperplane), so ``Sxx⁺`` is the
eigen-pseudo-inverse: eigenvalues below ``rcond² · λ_max`` are dropped.  That is
the same cutoff as ``numpy.linalg.lstsq(rcond=rcond)`` applies to the singular
values of the centred design, and unlike a plain Cholesky it does not fit
rounding noise in the null direction.

:func:`r2_scores` evaluates the fitted map on the held-out statistics without
ever seeing a held-out row again: for output dim j,

    SSE_j = syy_j - 2 (WᵀSxy)_jj + (WᵀSxxW)_jj + n δ_j²,   δ = my - Wᵀmx - b

where every quantity is the held-out split's.  R²_lin is then
``1 - Σ_j SSE_j / Σ_j SST_j`` with each dim centred on its own held-out mean
(the default, variance-weighted), ``r2_lin_global`` centres all elements on one
scalar mean (the paper's convention), and ``r2_median_dim`` is the median of the
per-dimension ``1 - SSE_j / SST_j``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

#: Rows of ``Sxx`` per block of the upper-triangle product (see :class:`MomentAccumulator`).
ROW_BLOCK = 192  # d=768: four row blocks, 5/8 of the full Gram product's work (timings: benches/README.md)
#: Rows of one CPU batch multiplied at a time: caps the shifted copies at ROW_CHUNK × (d_in + d_out) numbers.
#: An accelerator's batch goes in whole, and the sums stay on the accelerator until they are read.
ROW_CHUNK = 1024
#: ``precision`` → (dtype of the Gram product XᵀX, dtype of the cross product XᵀY); both summed in float64.
PRECISIONS = {
    "float64": (torch.float64, torch.float64),
    "mixed": (torch.float64, torch.float32),
    "float32": (torch.float32, torch.float32),
}


class MomentAccumulator:
    """Float64 first and second moments of (x, y) rows; see the module docstring.

    Internally the sums are kept about a fixed *shift* ``c`` (the first batch's
    mean, rounded to float32 so that it is exact in every compute dtype):
    ``Gxx = Σ (x-cx)(x-cx)ᵀ``, ``Gxy = Σ (x-cx)(y-cy)ᵀ``, ``Σ (x-cx)``, ``Σ (y-cy)``
    and ``Σ (y-cy)²``.  The centred moments are recovered on demand,
    ``Sxx = Gxx - n r rᵀ`` with ``r = mx - cx`` small (c is close to the mean, so
    no digits are lost), and likewise ``Sxy`` and ``syy``.  ``Gxx`` is symmetric,
    so only its upper block triangle is formed: rows are cut into blocks of
    :data:`ROW_BLOCK` and row block ``[a, a+b)`` meets columns ``a:``.

    ``precision`` picks the dtypes of the two products (:data:`PRECISIONS`).  The
    solve divides by the eigenvalues of ``Sxx``, so a relative error ε in ``Gxx``
    becomes an error of order ε·cond in the coefficients of the weakest kept
    direction, and float32's ε ≈ 6e-8 lifts the LayerNorm null direction above
    the ``rcond`` cutoff.  An error in ``Gxy`` enters only through ``Sxx⁺ Sxy``
    and is amplified by √cond at most (the projection of ``Sxy`` on an
    eigenvector shrinks with the square root of its eigenvalue).  So ``mixed``
    (the default) forms ``Gxx`` in float64 and ``Gxy`` in float32.
    ``tests/test_perf_paths.py`` holds mixed moments to float64 lstsq on rotated,
    rescaled LayerNorm rows of cond 1e8, where all-float32 moments miss.
    """

    def __init__(self, d_in: int, d_out: int) -> None:
        self.d_in, self.d_out = d_in, d_out
        self.n = 0
        self._cx, self._cy = np.zeros(d_in), np.zeros(d_out)  # the shift c (float32-representable)
        self._sx, self._sy = np.zeros(d_in), np.zeros(d_out)  # Σ (x-cx), Σ (y-cy)
        self._syy = np.zeros(d_out)  # Σ (y-cy)²
        self._starts = list(range(0, d_in, ROW_BLOCK))
        # Row block at a: Σ (x-cx)[:, a:a+b]ᵀ (x-cx)[:, a:]   (b, d_in - a)
        self._gxx = [torch.zeros(min(ROW_BLOCK, d_in - a), d_in - a, dtype=torch.float64) for a in self._starts]
        self._gxy = torch.zeros(d_in, d_out, dtype=torch.float64)  # Σ (x-cx)(y-cy)ᵀ

    def update(self, x: torch.Tensor, y: torch.Tensor, precision: str = "float64") -> None:
        """Add rows ``x`` (n, d_in) and ``y`` (n, d_out) of one batch, in :func:`row_chunks`."""
        n = x.shape[0]
        if n == 0:
            return
        x, y = x.reshape(n, -1), y.reshape(n, -1)  # (n, d_in), (n, d_out)
        if self.n == 0:
            self._cx, self._cy = _float32_mean(x), _float32_mean(y)
        gram_dtype, cross_dtype = PRECISIONS[precision]
        for rows in row_chunks(n, x.device):
            self._update_chunk(x[rows], y[rows], gram_dtype, cross_dtype)
        self.n += n

    def _update_chunk(self, x: torch.Tensor, y: torch.Tensor, gram_dtype, cross_dtype) -> None:
        xg = shifted(x, self._cx, gram_dtype)  # (n, d_in)
        xc = xg if cross_dtype == gram_dtype else shifted(x, self._cx, cross_dtype)
        yc = shifted(y, self._cy, cross_dtype)  # (n, d_out)
        self._sx += column_sums(xg)
        self._sy += column_sums(yc)
        self._syy += column_sums_of_squares(yc)
        if self._gxy.device != x.device:  # the sums stay where the rows are: no copy and no host add per batch
            self._gxx, self._gxy = [acc.to(x.device) for acc in self._gxx], self._gxy.to(x.device)
        for a, acc in zip(self._starts, self._gxx):
            acc.add_(xg[:, a : a + acc.shape[0]].T @ xg[:, a:])
        self._gxy.add_(xc.T @ yc)

    @property
    def mx(self) -> np.ndarray:
        return self._cx + self._sx / max(self.n, 1)

    @property
    def my(self) -> np.ndarray:
        return self._cy + self._sy / max(self.n, 1)

    @property
    def sxx(self) -> np.ndarray:
        """Σ (x-mx)(x-mx)ᵀ  (d_in, d_in)."""
        d = self.d_in
        upper = np.zeros((d, d))
        for a, acc in zip(self._starts, self._gxx):
            upper[a : a + acc.shape[0], a:] = acc.cpu().numpy()
        gxx = np.triu(upper) + np.triu(upper, 1).T
        rx = self._sx / max(self.n, 1)
        return gxx - self.n * np.outer(rx, rx)

    @property
    def sxy(self) -> np.ndarray:
        """Σ (x-mx)(y-my)ᵀ  (d_in, d_out)."""
        return self._gxy.cpu().numpy() - self.n * np.outer(self._sx / max(self.n, 1), self._sy / max(self.n, 1))

    @property
    def syy(self) -> np.ndarray:
        """Σ (y-my)² per output dim  (d_out,)."""
        return self._syy - self.n * (self._sy / max(self.n, 1)) ** 2

    def merge(self, other: MomentAccumulator) -> MomentAccumulator:
        """Fold ``other`` into ``self`` (Chan's pairwise update on centred moments) and return ``self``."""
        if (other.d_in, other.d_out) != (self.d_in, self.d_out):
            raise ValueError("cannot merge accumulators of different shapes")
        if not other.n:
            return self
        if not self.n:
            self._load(other.n, other.mx, other.my, other.sxx, other.sxy, other.syy)
            return self
        na, nb = self.n, other.n
        n = na + nb
        dx, dy = other.mx - self.mx, other.my - self.my
        w = na * nb / n
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite input is flagged at finalize
            self._load(
                n,
                self.mx + dx * (nb / n),
                self.my + dy * (nb / n),
                self.sxx + other.sxx + w * np.outer(dx, dx),
                self.sxy + other.sxy + w * np.outer(dx, dy),
                self.syy + other.syy + w * dy * dy,
            )
        return self

    @classmethod
    def from_moments(cls, n: int, mx, my, sxx, sxy, syy) -> MomentAccumulator:
        """An accumulator holding the given centred moments (see the module docstring)."""
        acc = cls(len(mx), len(my))
        if n:
            acc._load(n, np.asarray(mx, float), np.asarray(my, float), sxx, sxy, syy)
        return acc

    def _load(self, n, mx, my, sxx, sxy, syy) -> None:
        """Re-store centred moments about a new shift c = mean rounded to float32."""
        cx, cy = mx.astype(np.float32).astype(np.float64), my.astype(np.float32).astype(np.float64)
        rx, ry = mx - cx, my - cy
        gxx = sxx + n * np.outer(rx, rx)
        self.n, self._cx, self._cy, self._sx, self._sy = n, cx, cy, n * rx, n * ry
        self._syy = syy + n * ry * ry
        self._gxy.copy_(torch.from_numpy(np.ascontiguousarray(sxy + n * np.outer(rx, ry))))
        for a, acc in zip(self._starts, self._gxx):
            acc.copy_(torch.from_numpy(np.ascontiguousarray(gxx[a : a + acc.shape[0], a:])))


def merged(*accs: MomentAccumulator) -> MomentAccumulator:
    """A new accumulator holding the union of ``accs`` (inputs unchanged)."""
    out = copy.deepcopy(accs[0])
    for acc in accs[1:]:
        out.merge(acc)
    return out


def shifted(t: torch.Tensor, shift: np.ndarray, dtype) -> torch.Tensor:
    """``t - shift`` as a new tensor of ``dtype`` (the shift is float32-exact, so only the difference rounds)."""
    out = torch.empty(t.shape, dtype=dtype, device=t.device)
    return torch.sub(t, torch.as_tensor(shift, dtype=dtype, device=t.device), out=out)


def row_chunks(n: int, device: torch.device) -> list[slice]:
    """Slices of :data:`ROW_CHUNK` rows on the CPU; one slice of all ``n`` rows on an accelerator."""
    step = ROW_CHUNK if device.type == "cpu" else max(n, 1)
    return [slice(start, start + step) for start in range(0, n, step)]


def column_sums(t: torch.Tensor) -> np.ndarray:
    """Σ over the rows of ``t`` (m, k): one matrix-vector product in ``t``'s dtype (faster on the CPU than a
    strided ``sum(0)`` with a cast to float64; benches/README.md).  Used for sums about the shift, which are
    small and only correct the second moments by ``n r rᵀ``; in float32 they round like the chunk's cross
    product."""
    return (t.T @ torch.ones(t.shape[0], dtype=t.dtype, device=t.device)).double().cpu().numpy()


def column_sums_of_squares(t: torch.Tensor) -> np.ndarray:
    """Σ over the rows of ``t²`` (m, k), squared and summed in float64: these are SST and SSE themselves, and
    a float32 sum of many squares loses the digits that ``1 - SSE/SST`` needs when R² is close to 1."""
    return column_sums(t.to(torch.float64).square())  # a new tensor: t itself is still needed


def _float32_mean(t: torch.Tensor) -> np.ndarray:
    """Column mean of ``t`` rounded to float32: a shift that is exact in float32 and float64."""
    return t.mean(0, dtype=torch.float64).float().double().cpu().numpy()


@dataclass(frozen=True)
class AffineFit:
    """``y ≈ Wᵀx + b`` with ``W`` (d_in, d_out); ``rank`` eigen-directions kept.

    ``whiten`` (d_in, rank) is ``V Λ^{-1/2}`` over the kept eigenpairs of the train ``Sxx``, so the
    leverage of a row under the train Gram matrix is ``h = ‖(x − mx) · whiten‖² = (x − mx)ᵀ Sxx⁺ (x − mx)``;
    ``mx`` is the train mean of x and ``n`` the number of train rows.
    """

    w: np.ndarray
    b: np.ndarray
    rank: int
    cond: float
    whiten: np.ndarray | None = None
    mx: np.ndarray | None = None
    n: int = 0


def fit_affine(train: MomentAccumulator, rcond: float = 1e-6) -> AffineFit:
    """Minimum-norm affine least squares from centred train moments.

    ``cond`` is the condition number of the train Gram matrix on the subspace that
    is kept (λ_max / smallest kept λ); the dropped null directions would make the
    full matrix's condition number infinite by construction.
    """
    evals, evecs = np.linalg.eigh(train.sxx)
    lam_max = float(evals[-1]) if evals.size else 0.0
    keep = evals > (rcond**2) * lam_max if lam_max > 0 else np.zeros_like(evals, bool)
    v = evecs[:, keep]
    inv = 1.0 / evals[keep]
    w = v @ (inv[:, None] * (v.T @ train.sxy))  # (d_in, d_out)
    b = train.my - train.mx @ w
    cond = lam_max / float(evals[keep].min()) if keep.any() else float("inf")
    whiten = v * (1.0 / np.sqrt(evals[keep]))  # (d_in, rank)
    return AffineFit(w=w, b=b, rank=int(keep.sum()), cond=cond, whiten=whiten, mx=train.mx, n=train.n)


def residual_ss(fit: AffineFit, test: MomentAccumulator) -> np.ndarray:
    """Per-output-dim held-out sum of squared residuals ``SSE_j`` (d_out,)."""
    w = fit.w
    cross = np.einsum("ij,ij->j", w, test.sxy)  # (WᵀSxy)_jj
    quad = np.einsum("ij,ij->j", w, test.sxx @ w)  # (WᵀSxxW)_jj
    delta = test.my - test.mx @ w - fit.b
    sse = test.syy - 2.0 * cross + quad + test.n * delta**2
    return np.maximum(sse, 0.0)


def r2_scores(fit: AffineFit, test: MomentAccumulator) -> dict[str, float]:
    """Held-out R² under both centrings, and the median per-dimension R²."""
    return scores_from_sums(residual_ss(fit, test), test.syy, test.my, test.n)


def scores_from_sums(sse: np.ndarray, sst: np.ndarray, my: np.ndarray, n: int) -> dict[str, float]:
    """R² from held-out per-dim ``SSE_j``, ``SST_j = Σ (y_j - my_j)²`` and means ``my`` over ``n`` rows.

    ``r2_lin = 1 - Σ SSE / Σ SST``; ``r2_lin_global`` uses ``Σ SST + n Σ (my_j - mean(my))²``,
    every element centred on one scalar; ``r2_median_dim`` is the median over live dims of ``1 - SSE_j / SST_j``.
    """
    sst_global = sst.sum() + n * np.sum((my - my.mean()) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_dim = 1.0 - sse / sst
    live = sst > 0
    return {
        "r2_lin": float(1.0 - sse.sum() / sst.sum()) if sst.sum() > 0 else float("nan"),
        "r2_lin_global": float(1.0 - sse.sum() / sst_global) if sst_global > 0 else float("nan"),
        "r2_median_dim": float(np.median(per_dim[live])) if live.any() else float("nan"),
    }


class BlockResult(Protocol):
    """One block's statistics, complete: what :func:`trajectory.engine.measure.measure_blocks` finalizes
    (:class:`BlockStats`, from moments, or :class:`trajectory.engine.heldout.FitThenScore`, one pass)."""

    @property
    def n_train(self) -> int: ...

    @property
    def n_test(self) -> int: ...

    def finite(self) -> bool:
        """Whether every statistic the fit and the score need is finite."""

    def affine_fit(self, rcond: float = 1e-6) -> AffineFit | None:
        """The affine map fitted on the train rows."""

    def finalize(self, rcond: float = 1e-6) -> dict[str, float]:
        """The flat per-block result: the R² scores, n_train, n_test, cond, rank."""


class GroupMoments:
    """One :class:`MomentAccumulator` per group of rows (train, held-out, k-fold folds), one precision."""

    def __init__(self, d_in: int, d_out: int, n_groups: int, precision: str = "float64") -> None:
        self.groups = [MomentAccumulator(d_in, d_out) for _ in range(n_groups)]
        self.precision = precision

    def update(self, group: int, x: torch.Tensor, y: torch.Tensor) -> None:
        self.groups[group].update(x, y, self.precision)


@dataclass
class BlockStats:
    """The train and held-out accumulators of one block."""

    train: MomentAccumulator
    test: MomentAccumulator

    @classmethod
    def empty(cls, d_in: int, d_out: int) -> BlockStats:
        return cls(MomentAccumulator(d_in, d_out), MomentAccumulator(d_in, d_out))

    def merge(self, other: BlockStats) -> BlockStats:
        self.train.merge(other.train)
        self.test.merge(other.test)
        return self

    @property
    def n_train(self) -> int:
        return self.train.n

    @property
    def n_test(self) -> int:
        return self.test.n

    def affine_fit(self, rcond: float = 1e-6) -> AffineFit:
        return fit_affine(self.train, rcond)

    def finite(self) -> bool:
        moments = (self.train.sxx, self.train.sxy, self.test.syy, self.test.sxy)
        return all(np.isfinite(m).all() for m in moments)

    def finalize(self, rcond: float = 1e-6) -> dict[str, float]:
        """Fit on train, score on held-out: the flat per-block result."""
        fit = fit_affine(self.train, rcond)
        out = r2_scores(fit, self.test)
        out.update(n_train=self.train.n, n_test=self.test.n, cond=fit.cond, rank=fit.rank)
        return out
