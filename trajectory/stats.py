"""Streaming sufficient statistics for the affine least-squares fit, and R²_lin.

For one block and one split we see rows ``x ∈ R^d`` (the FFN input) and
``y ∈ R^k`` (the FFN output).  :class:`MomentAccumulator` keeps, in float64,

* ``n``        the number of rows,
* ``mx, my``   the means of x and y,
* ``Sxx``      Σ (x-mx)(x-mx)ᵀ            (d × d),
* ``Sxy``      Σ (x-mx)(y-my)ᵀ            (d × k),
* ``syy``      Σ (y-my)²  per output dim  (k,),

which are exactly the sufficient statistics ``[X,1]ᵀ[X,1]``, ``[X,1]ᵀY``,
``Σy`` and ``Σy²`` rewritten about the running mean.  Batches are merged with
Chan et al.'s pairwise update, so memory never grows with the number of tokens
and the result does not depend on how the tokens were batched (up to float64
rounding).  Centring each batch before its product keeps the Gram matrix free
of the large mean term that would otherwise cost digits.

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

from dataclasses import dataclass

import numpy as np
import torch


class MomentAccumulator:
    """Float64 first and second moments of (x, y) rows; see the module docstring."""

    def __init__(self, d_in: int, d_out: int) -> None:
        self.d_in, self.d_out = d_in, d_out
        self.n = 0
        self.mx = np.zeros(d_in)
        self.my = np.zeros(d_out)
        self.sxx = np.zeros((d_in, d_in))
        self.sxy = np.zeros((d_in, d_out))
        self.syy = np.zeros(d_out)

    def update(self, x: torch.Tensor, y: torch.Tensor, compute_dtype=torch.float64) -> None:
        """Add rows ``x`` (n, d_in) and ``y`` (n, d_out) of one batch.

        The batch is centred on its own mean in ``compute_dtype`` and one product
        ``Xcᵀ[Xc | Yc]`` gives both ``Sxx`` and ``Sxy``; the result is merged in float64.
        """
        n = x.shape[0]
        if n == 0:
            return
        x = x.reshape(n, -1).to(compute_dtype)  # (n, d_in)
        y = y.reshape(n, -1).to(compute_dtype)  # (n, d_out)
        bx, by = x.mean(0), y.mean(0)
        xc, yc = x - bx, y - by
        prod = xc.T @ torch.cat([xc, yc], dim=1)  # (d_in, d_in + d_out)
        syy = (yc * yc).sum(0)
        self._merge_raw(
            n,
            bx.double().cpu().numpy(),
            by.double().cpu().numpy(),
            prod[:, : self.d_in].double().cpu().numpy(),
            prod[:, self.d_in :].double().cpu().numpy(),
            syy.double().cpu().numpy(),
        )

    def merge(self, other: "MomentAccumulator") -> "MomentAccumulator":
        """Fold ``other`` into ``self`` (Chan's pairwise update) and return ``self``."""
        if (other.d_in, other.d_out) != (self.d_in, self.d_out):
            raise ValueError("cannot merge accumulators of different shapes")
        if other.n:
            self._merge_raw(other.n, other.mx, other.my, other.sxx, other.sxy, other.syy)
        return self

    def _merge_raw(self, nb, mxb, myb, sxxb, sxyb, syyb) -> None:
        na = self.n
        n = na + nb
        dx, dy = mxb - self.mx, myb - self.my
        w = na * nb / n
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite input is flagged at finalize
            self._fold(n, nb, w, dx, dy, sxxb, sxyb, syyb)

    def _fold(self, n, nb, w, dx, dy, sxxb, sxyb, syyb) -> None:
        self.sxx += sxxb + w * np.outer(dx, dx)
        self.sxy += sxyb + w * np.outer(dx, dy)
        self.syy += syyb + w * dy * dy
        self.mx += dx * (nb / n)
        self.my += dy * (nb / n)
        self.n = n


@dataclass(frozen=True)
class AffineFit:
    """``y ≈ Wᵀx + b`` with ``W`` (d_in, d_out); ``rank`` eigen-directions kept."""

    w: np.ndarray
    b: np.ndarray
    rank: int
    cond: float


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
    return AffineFit(w=w, b=b, rank=int(keep.sum()), cond=cond)


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
    sse = residual_ss(fit, test)
    sst = test.syy
    sst_global = sst.sum() + test.n * np.sum((test.my - test.my.mean()) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_dim = 1.0 - sse / sst
    live = sst > 0
    return {
        "r2_lin": float(1.0 - sse.sum() / sst.sum()) if sst.sum() > 0 else float("nan"),
        "r2_lin_global": float(1.0 - sse.sum() / sst_global) if sst_global > 0 else float("nan"),
        "r2_median_dim": float(np.median(per_dim[live])) if live.any() else float("nan"),
    }


@dataclass
class BlockStats:
    """The train and held-out accumulators of one block."""

    train: MomentAccumulator
    test: MomentAccumulator

    @classmethod
    def empty(cls, d_in: int, d_out: int) -> "BlockStats":
        return cls(MomentAccumulator(d_in, d_out), MomentAccumulator(d_in, d_out))

    def merge(self, other: "BlockStats") -> "BlockStats":
        self.train.merge(other.train)
        self.test.merge(other.test)
        return self

    def finalize(self, rcond: float = 1e-6) -> dict[str, float]:
        """Fit on train, score on held-out: the flat per-block result."""
        fit = fit_affine(self.train, rcond)
        out = r2_scores(fit, self.test)
        out.update(n_train=self.train.n, n_test=self.test.n, cond=fit.cond, rank=fit.rank)
        return out
