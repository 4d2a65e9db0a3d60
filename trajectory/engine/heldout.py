"""R²_lin in one pass: a block's train moments, then the held-out residuals of the map they give.

The probe feeds every train window before the first held-out one (it sorts
windows by group), so when a block's first held-out row arrives its train
moments are complete.  :class:`FitThenScore` fits the affine map there
(:func:`trajectory.stats.fit_affine`), drops the train Gram matrices, and from
then on keeps only three float64 sums per output dim j:

    Σ r_j²,   Σ (y_j - c_j),   Σ (y_j - c_j)²,        r = y - Wᵀx - b,

where c is a fixed shift near the mean.  ``SSE_j = Σ r_j²`` and
``SST_j = Σ (y_j - c_j)² - n (mean of y_j - c_j)²`` then give the same scores
as :func:`trajectory.stats.r2_scores` on held-out moments (via
:func:`trajectory.stats.scores_from_sums`), but a held-out row costs one product
``(x - c_x) W`` instead of the Gram and cross products, and no held-out d×d
accumulator is ever allocated.

The residual is formed about the train shift, ``r = (y - c_y) - Wᵀ(x - c_x) - δ``
with ``δ = b + Wᵀc_x - c_y``, in the cross-product dtype of ``precision``
(:data:`trajectory.stats.PRECISIONS`); its squares are summed in float64.  Under
``mixed`` that is float32: on the tests' inputs of cond 1e8 the one-pass score
stayed within 3e-9 of float64 lstsq (``tests/test_perf_paths.py``), closer than
scoring held-out moments (5e-7), whose float32 cross product meets the fit's
largest coefficients.

**Finite-sample correction** (``r2_lin_inf``).  The fitted map carries an
estimation error that shrinks with the number ``n`` of train rows, so held-out
R² rises with ``n``.  Under a linear model with noise independent of x and
conditional on the train rows, a held-out residual has
``E[e_t² | x_t] = σ² (1 + 1/n + h_t)``, with ``h_t = (x_t − mx)ᵀ Sxx⁺ (x_t − mx)``
its leverage under the train Gram matrix (:attr:`AffineFit.whiten`).  So

    SSE_∞ = Σ_t ‖e_t‖² / (1 + 1/n + h_t),     r2_lin_inf = r2_lin + (SSE − SSE_∞) / SST

estimates the held-out error of the map that unlimited train rows would give
(the population least-squares map), on the same held-out rows.  It needs each
held-out row's residual, one extra product ``(x − mx) · whiten`` per held-out
row.  Rows within a window are correlated, which the formula ignores, so on real
activations it removes most but not all of the bias (docs/verdicts.md, "Finite-sample bias").

The k-fold interval and the effective rank need the held-out moments
themselves, so :mod:`trajectory.measure` then keeps per-group moments and scores
the held-out rows in the same pass (:class:`MomentsThenScore`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .stats import (
    PRECISIONS,
    AffineFit,
    GroupMoments,
    MomentAccumulator,
    column_sums,
    column_sums_of_squares,
    fit_affine,
    merged,
    row_chunks,
    scores_from_sums,
    shifted,
)


class HeldoutResiduals:
    """Float64 per-dim sums of held-out residuals of a fixed ``fit``, of the targets about ``shift_y``, and the
    leverage-weighted residual sum ``SSE_∞`` (module docstring)."""

    def __init__(self, fit: AffineFit, shift_x: np.ndarray, shift_y: np.ndarray, dtype=torch.float32) -> None:
        self.dtype, self.n = dtype, 0
        self._cx, self._cy = shift_x, shift_y
        self._w = torch.from_numpy(fit.w).to(dtype)  # (d_in, d_out)
        self._delta = torch.from_numpy(fit.b + shift_x @ fit.w - shift_y).to(dtype)  # (d_out,)
        # leverage: ‖(x - cx)·whiten - (mx - cx)·whiten‖², the shift's offset from the train mean taken out once
        self._whiten = torch.from_numpy(fit.whiten).to(dtype)  # (d_in, rank)
        self._offset = torch.from_numpy((fit.mx - shift_x) @ fit.whiten).to(dtype)  # (rank,)
        self._inv_n = 1.0 / max(fit.n, 1)
        d_out = fit.w.shape[1]
        self._sse, self._sy, self._syy = np.zeros(d_out), np.zeros(d_out), np.zeros(d_out)
        self._sse_inf = 0.0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add held-out rows ``x`` (n, d_in), ``y`` (n, d_out), in :func:`~trajectory.stats.row_chunks`."""
        n = x.shape[0]
        x, y = x.reshape(n, -1), y.reshape(n, -1)
        if self._w.device != x.device:
            self._w, self._delta = self._w.to(x.device), self._delta.to(x.device)
            self._whiten, self._offset = self._whiten.to(x.device), self._offset.to(x.device)
        for rows in row_chunks(n, x.device):
            xc = shifted(x[rows], self._cx, self.dtype)  # (m, d_in)
            yc = shifted(y[rows], self._cy, self.dtype)  # (m, d_out)
            self._sy += column_sums(yc)
            self._syy += column_sums_of_squares(yc)
            resid = torch.addmm(yc.sub_(self._delta), xc, self._w, alpha=-1.0)  # (y-cy) - δ - (x-cx)W
            self._sse += column_sums_of_squares(resid)
            lev = (xc @ self._whiten).sub_(self._offset).double().square().sum(1)  # (m,) h_t
            sq = resid.double().square().sum(1)  # (m,) ‖e_t‖²
            self._sse_inf += float((sq / (1.0 + self._inv_n + lev)).sum())
        self.n += n

    def finite(self) -> bool:
        return bool(np.isfinite(self._sse).all() and np.isfinite(self._syy).all())

    def sst(self) -> np.ndarray:
        """Per-dim held-out ``SST_j``, each dim about its own held-out mean."""
        mean = self._sy / max(self.n, 1)
        return self._syy - self.n * mean**2

    def scores(self) -> dict[str, float]:
        return scores_from_sums(np.maximum(self._sse, 0.0), self.sst(), self._cy + self._sy / max(self.n, 1), self.n)

    def inf_gain(self) -> float:
        """``(SSE − SSE_∞) / SST``: what ``r2_lin_inf`` adds to ``r2_lin`` (module docstring); ≥ 0."""
        sst = float(self.sst().sum())
        return (float(self._sse.sum()) - self._sse_inf) / sst if sst > 0 else float("nan")


def _scorer(train: MomentAccumulator, precision: str, rcond: float) -> tuple[AffineFit, HeldoutResiduals] | None:
    """The fit on complete train moments and a scorer of held-out rows (None when the moments are not finite)."""
    if not (np.isfinite(train.sxx).all() and np.isfinite(train.sxy).all()):
        return None
    fit = fit_affine(train, rcond)
    shift_x, shift_y = (m.astype(np.float32).astype(np.float64) for m in (train.mx, train.my))
    scorer = HeldoutResiduals(fit, shift_x, shift_y, PRECISIONS[precision][1])
    return replace(fit, whiten=None), scorer  # the scorer holds its own copy of the whitening


class FitThenScore:
    """One block in one pass: group 0 rows build train moments, group 1 rows are scored (module docstring)."""

    def __init__(self, d_in: int, d_out: int, precision: str = "mixed", rcond: float = 1e-6) -> None:
        self.train: MomentAccumulator | None = MomentAccumulator(d_in, d_out)
        self.precision, self.rcond = precision, rcond
        self.fit: AffineFit | None = None
        self.heldout: HeldoutResiduals | None = None
        self.n_train = 0

    def update(self, group: int, x: torch.Tensor, y: torch.Tensor) -> None:
        if group == 0:
            if self.train is None:
                raise RuntimeError("a train row arrived after held-out rows; feed every train window first")
            self.train.update(x, y, self.precision)
            return
        if self.train is not None:
            self._fit()
        if self.heldout is not None:  # None: the train moments were not finite, nothing to score
            self.heldout.update(x, y)

    def _fit(self) -> None:
        """Fit on the complete train moments, then free them (only the fit is needed from here on)."""
        train, self.train = self.train, None
        self.n_train = train.n
        self.fit, self.heldout = _scorer(train, self.precision, self.rcond) or (None, None)

    @property
    def n_test(self) -> int:
        return self.heldout.n if self.heldout is not None else 0

    def affine_fit(self, rcond: float | None = None) -> AffineFit | None:
        """The fit made when the first held-out row arrived (None if the train moments were not finite)."""
        if rcond is not None and rcond != self.rcond:
            raise ValueError(f"this block was fitted with rcond={self.rcond}, not {rcond}")
        if self.train is not None:
            self._fit()
        return self.fit

    def finite(self) -> bool:
        return self.affine_fit() is not None and self.heldout.finite()

    def finalize(self, rcond: float | None = None) -> dict[str, float]:
        """The flat per-block result, as :meth:`trajectory.stats.BlockStats.finalize` gives it."""
        self.affine_fit(rcond)
        out = self.heldout.scores()
        out.update(n_train=self.n_train, n_test=self.heldout.n, cond=self.fit.cond, rank=self.fit.rank)
        out["r2_lin_inf"] = out["r2_lin"] + self.heldout.inf_gain()
        return out


class MomentsThenScore(GroupMoments):
    """Per-group moments of every group (for the k-fold and effective-rank companions), and the main split
    scored row by row in the same pass, for ``r2_lin_inf``.

    Groups ``0 … n_train_groups − 1`` are train and arrive first; at the first row of a later (held-out)
    group the map is fitted on the merged train groups and every held-out row is then also scored.
    """

    def __init__(
        self, d_in: int, d_out: int, n_groups: int, n_train_groups: int, precision: str = "mixed", rcond: float = 1e-6
    ) -> None:
        super().__init__(d_in, d_out, n_groups, precision)
        self.n_train_groups, self.rcond = n_train_groups, rcond
        self.scorer: HeldoutResiduals | None = None
        self._fitted = False

    def update(self, group: int, x: torch.Tensor, y: torch.Tensor) -> None:
        super().update(group, x, y)
        if group < self.n_train_groups:
            if self._fitted:
                raise RuntimeError("a train row arrived after held-out rows; feed every train window first")
            return
        if not self._fitted:
            self._fitted = True
            made = _scorer(merged(*self.groups[: self.n_train_groups]), self.precision, self.rcond)
            self.scorer = made[1] if made else None
        if self.scorer is not None:
            self.scorer.update(x, y)

    def inf_gain(self) -> float:
        """What ``r2_lin_inf`` adds to the moment path's ``r2_lin`` (NaN when nothing was scored)."""
        return self.scorer.inf_gain() if self.scorer is not None else float("nan")
