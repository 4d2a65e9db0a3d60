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

The k-fold interval and the effective rank need the held-out moments
themselves, so :mod:`trajectory.measure` keeps the moment path when they are asked for.
"""

from __future__ import annotations

import numpy as np
import torch

from .stats import (
    PRECISIONS,
    AffineFit,
    MomentAccumulator,
    column_sums,
    column_sums_of_squares,
    fit_affine,
    row_chunks,
    scores_from_sums,
    shifted,
)


class HeldoutResiduals:
    """Float64 per-dim sums of held-out residuals of a fixed ``fit``, and of the targets about ``shift_y``."""

    def __init__(self, fit: AffineFit, shift_x: np.ndarray, shift_y: np.ndarray, dtype=torch.float32) -> None:
        self.dtype, self.n = dtype, 0
        self._cx, self._cy = shift_x, shift_y
        self._w = torch.from_numpy(fit.w).to(dtype)  # (d_in, d_out)
        self._delta = torch.from_numpy(fit.b + shift_x @ fit.w - shift_y).to(dtype)  # (d_out,)
        d_out = fit.w.shape[1]
        self._sse, self._sy, self._syy = np.zeros(d_out), np.zeros(d_out), np.zeros(d_out)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add held-out rows ``x`` (n, d_in), ``y`` (n, d_out), in :func:`~trajectory.stats.row_chunks`."""
        n = x.shape[0]
        x, y = x.reshape(n, -1), y.reshape(n, -1)
        if self._w.device != x.device:
            self._w, self._delta = self._w.to(x.device), self._delta.to(x.device)
        for rows in row_chunks(n, x.device):
            xc = shifted(x[rows], self._cx, self.dtype)  # (m, d_in)
            yc = shifted(y[rows], self._cy, self.dtype)  # (m, d_out)
            self._sy += column_sums(yc)
            self._syy += column_sums_of_squares(yc)
            resid = torch.addmm(yc.sub_(self._delta), xc, self._w, alpha=-1.0)  # (y-cy) - δ - (x-cx)W
            self._sse += column_sums_of_squares(resid)
        self.n += n

    def finite(self) -> bool:
        return bool(np.isfinite(self._sse).all() and np.isfinite(self._syy).all())

    def scores(self) -> dict[str, float]:
        mean = self._sy / max(self.n, 1)
        return scores_from_sums(np.maximum(self._sse, 0.0), self._syy - self.n * mean**2, self._cy + mean, self.n)


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
        if not (np.isfinite(train.sxx).all() and np.isfinite(train.sxy).all()):
            return
        self.fit = fit_affine(train, self.rcond)
        shift_x, shift_y = (m.astype(np.float32).astype(np.float64) for m in (train.mx, train.my))
        self.heldout = HeldoutResiduals(self.fit, shift_x, shift_y, PRECISIONS[self.precision][1])

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
        return out
