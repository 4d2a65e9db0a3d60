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

The per-batch products run in ``compute_dtype`` and are summed in float64.
float64 (the default) matches ``numpy.linalg.lstsq`` on stored activations to
1e-14 in R² on a pythia-160m-shaped model.  float32 products are about 3× faster
on CPU but cost digits: max |ΔR²| against float64 was 3e-8 and 1.2e-7 on the
tests' tiny models (d=32) and 2e-5 at d=768 with 2k tokens (the fit is then
ill-conditioned, and float32 rounding lifts the LayerNorm null direction above
the ``rcond`` cutoff), so it is an option, hashed into the metric digest.

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


#: Rows of ``Sxx`` per block of the upper-triangle product (see :class:`MomentAccumulator`).
ROW_BLOCK = 384  # d=768: two row blocks, 7/8 of the full product's work


class MomentAccumulator:
    """Float64 first and second moments of (x, y) rows; see the module docstring.

    Internally the sums are kept about a fixed *shift* ``c`` (the first batch's
    mean, rounded to float32 so that it is exact in every compute dtype):
    ``G = Σ (x-cx)[(x-cx) | (y-cy)]ᵀ``, ``Σ (x-cx)``, ``Σ (y-cy)`` and ``Σ (y-cy)²``.
    The centred moments are recovered on demand, ``Sxx = Gxx - n r rᵀ`` with
    ``r = mx - cx`` small (c is close to the mean, so no digits are lost), and
    likewise ``Sxy`` and ``syy``.  An update is therefore one product per block
    of rows added into float64, with no per-batch outer product.  ``Sxx`` is
    symmetric, so only its upper block triangle is formed: rows are cut into
    blocks of :data:`ROW_BLOCK` and row block ``[a, a+b)`` meets columns ``a:``.
    """

    def __init__(self, d_in: int, d_out: int) -> None:
        self.d_in, self.d_out = d_in, d_out
        self.n = 0
        self._cx, self._cy = np.zeros(d_in), np.zeros(d_out)  # the shift c (float32-representable)
        self._sx, self._sy = np.zeros(d_in), np.zeros(d_out)  # Σ (x-cx), Σ (y-cy)
        self._syy = np.zeros(d_out)  # Σ (y-cy)²
        self._starts = list(range(0, d_in, ROW_BLOCK))
        # Row block at a: Σ (x-cx)[:, a:a+b]ᵀ [(x-cx)[:, a:] | (y-cy)]   (b, d_in - a + d_out)
        self._rows = [torch.zeros(min(ROW_BLOCK, d_in - a), d_in - a + d_out, dtype=torch.float64)
                      for a in self._starts]

    def update(self, x: torch.Tensor, y: torch.Tensor, compute_dtype=torch.float64) -> None:
        """Add rows ``x`` (n, d_in) and ``y`` (n, d_out) of one batch.

        The rows are shifted by ``c`` straight into one (n, d_in + d_out) buffer of
        ``compute_dtype`` (no concatenation copy); each row block's product is
        formed in ``compute_dtype`` and accumulated in float64.
        """
        n = x.shape[0]
        if n == 0:
            return
        x, y = x.reshape(n, -1), y.reshape(n, -1)  # (n, d_in), (n, d_out)
        if self.n == 0:
            self._cx, self._cy = _float32_mean(x), _float32_mean(y)
        d = self.d_in
        buf = torch.empty(n, d + self.d_out, dtype=compute_dtype, device=x.device)  # [x-cx | y-cy]
        torch.sub(x, torch.as_tensor(self._cx, dtype=compute_dtype, device=x.device), out=buf[:, :d])
        torch.sub(y, torch.as_tensor(self._cy, dtype=compute_dtype, device=x.device), out=buf[:, d:])
        sums = (buf.T @ torch.ones(n, dtype=compute_dtype, device=x.device)).double().cpu().numpy()
        self._sx += sums[:d]
        self._sy += sums[d:]
        self._syy += buf[:, d:].square().sum(0, dtype=torch.float64).cpu().numpy()
        for a, acc in zip(self._starts, self._rows):
            acc.add_((buf[:, a : a + acc.shape[0]].T @ buf[:, a:]).cpu())
        self.n += n

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
        for a, acc in zip(self._starts, self._rows):
            upper[a : a + acc.shape[0], a:] = acc[:, : d - a].numpy()
        gxx = np.triu(upper) + np.triu(upper, 1).T
        rx = self._sx / max(self.n, 1)
        return gxx - self.n * np.outer(rx, rx)

    @property
    def sxy(self) -> np.ndarray:
        """Σ (x-mx)(y-my)ᵀ  (d_in, d_out)."""
        gxy = np.concatenate([acc[:, self.d_in - a :].numpy() for a, acc in zip(self._starts, self._rows)])
        return gxy - self.n * np.outer(self._sx / max(self.n, 1), self._sy / max(self.n, 1))

    @property
    def syy(self) -> np.ndarray:
        """Σ (y-my)² per output dim  (d_out,)."""
        return self._syy - self.n * (self._sy / max(self.n, 1)) ** 2

    def merge(self, other: "MomentAccumulator") -> "MomentAccumulator":
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
            self._load(n, self.mx + dx * (nb / n), self.my + dy * (nb / n),
                       self.sxx + other.sxx + w * np.outer(dx, dx),
                       self.sxy + other.sxy + w * np.outer(dx, dy),
                       self.syy + other.syy + w * dy * dy)
        return self

    @classmethod
    def from_moments(cls, n: int, mx, my, sxx, sxy, syy) -> "MomentAccumulator":
        """An accumulator holding the given centred moments (see the module docstring)."""
        acc = cls(len(mx), len(my))
        if n:
            acc._load(n, np.asarray(mx, float), np.asarray(my, float), sxx, sxy, syy)
        return acc

    def _load(self, n, mx, my, sxx, sxy, syy) -> None:
        """Re-store centred moments about a new shift c = mean rounded to float32."""
        cx, cy = mx.astype(np.float32).astype(np.float64), my.astype(np.float32).astype(np.float64)
        rx, ry = mx - cx, my - cy
        gxx, gxy = sxx + n * np.outer(rx, rx), sxy + n * np.outer(rx, ry)
        self.n, self._cx, self._cy, self._sx, self._sy = n, cx, cy, n * rx, n * ry
        self._syy = syy + n * ry * ry
        for a, acc in zip(self._starts, self._rows):
            b = acc.shape[0]
            acc.copy_(torch.from_numpy(np.hstack([gxx[a : a + b, a:], gxy[a : a + b]])))


def _float32_mean(t: torch.Tensor) -> np.ndarray:
    """Column mean of ``t`` rounded to float32: a shift that is exact in float32 and float64."""
    return t.mean(0, dtype=torch.float64).float().double().cpu().numpy()


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
