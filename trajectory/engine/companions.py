"""Companion linearity metrics computed from the same streaming moments as R²_lin.

All of them are closed-form functions of :class:`~trajectory.engine.stats.MomentAccumulator`
statistics; none needs a stored activation.

**Effective rank** (reduced-rank affine map).  With ``B = Sxx⁺ Sxy`` the full
least-squares map, the best rank-r map in the train Frobenius norm is
``B_r = B P_r``, ``P_r = V_r V_rᵀ`` the projector on the top-r eigenvectors of
the fitted values' scatter ``Bᵀ Sxx B`` (reduced-rank regression, Izenman
1975), with the intercept refitted: ``b_r = my - B_rᵀ mx``.  Its held-out
residual, summed over outputs, is a cumulative sum over eigenvectors:

    SSE(r) = Σ syy_t - 2 Σ_{i≤r} v_iᵀ(BᵀSxy_t)v_i + Σ_{i≤r} v_iᵀ(BᵀSxx_t B)v_i
             + n_t (‖a‖² - 2 Σ_{i≤r} (aᵀv_i)(v_iᵀc) + Σ_{i≤r} (v_iᵀc)²),

with ``a = my_t - my``, ``c = Bᵀ(mx_t - mx)``.  The effective rank is the
smallest r whose held-out R² reaches ``frac`` (0.9) of the full-rank R²_lin.

**Secretly-linear score** (Razzhigaev et al., arXiv 2405.12250) between
consecutive residual-stream states ``h_l → h_{l+1}``: centre both, divide by
their Frobenius norms, fit the least-squares linear map; score = 1 - residual.
Dividing Y by ‖Yc‖_F makes the residual ``SSE / tr(Syy)``, so the score is the
variance-weighted R² of the centred linear fit: in-sample on all tokens (the
paper), or fitted on train and scored on held-out (``_heldout``).  The
"without residual" variant targets ``h_{l+1} - h_l``; its moments follow from
the same accumulator (:func:`minus_input`).

**Uncertainty**: k-fold cross-validation by sequence.  Fold f is scored with
the map fitted on the other folds; ``r2_lin_cv`` is the mean of the k fold
scores and ``[r2_lin_cv_low, r2_lin_cv_high] = mean ± t(0.975, k−1) · sd / √k``
its 95% interval (:func:`trajectory.engine.tdist.t_quantile`).  The interval is
centred on the k-fold mean and belongs to it, not to the single-split
``r2_lin``, which it need not contain: one split scatters about the k-fold
mean by about one fold score's sd, while the half-width is t·sd/√k (1.24 sd
for k = 5).  Folds share training rows, so this interval is, as usual for CV,
somewhat optimistic.
"""

from __future__ import annotations

import numpy as np

from .stats import MomentAccumulator, fit_affine, merged, r2_scores
from .tdist import t_quantile

__all__ = [
    "effective_rank",
    "kfold_interval",
    "linearity_scores",
    "low_rank_fit",
    "merged",
    "minus_input",
    "reduced_rank_directions",
    "reduced_rank_r2",
]


def reduced_rank_directions(train: MomentAccumulator, rcond: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """(B, V): the full least-squares map ``B = Sxx⁺ Sxy`` (d_in, d_out) and the eigenvectors of ``Bᵀ Sxx B``
    as columns of V (d_out, d_out), leading direction first (module docstring)."""
    b = fit_affine(train, rcond).w  # (d_in, d_out)
    _, evecs = np.linalg.eigh(b.T @ train.sxx @ b)
    return b, evecs[:, ::-1]


def low_rank_fit(train: MomentAccumulator, rank: int, rcond: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U, Vᵀ, b): the best rank-``rank`` affine map ``y ≈ (xU)Vᵀ + b`` on the train moments.

    ``U = B V_r`` (d_in, r) and ``Vᵀ = V_rᵀ`` (r, d_out), so ``U Vᵀ = B_r = B V_r V_rᵀ``; ``b = my − B_rᵀ mx``
    (module docstring).  At ``rank = d_out`` the projector is the identity and the map is the full affine fit.
    """
    b, v = reduced_rank_directions(train, rcond)
    v_r = v[:, :rank]  # (d_out, r)
    u = b @ v_r  # (d_in, r)
    return u, v_r.T, train.my - (train.mx @ u) @ v_r.T


def reduced_rank_r2(train: MomentAccumulator, test: MomentAccumulator, rcond: float = 1e-6) -> np.ndarray:
    """Held-out variance-weighted R² of the best rank-r affine map, for r = 1 … d_out."""
    b, v = reduced_rank_directions(train, rcond)  # (d_in, d_out), (d_out, d_out)
    cross = np.einsum("ji,jk,ki->i", v, b.T @ test.sxy, v)
    quad = np.einsum("ji,jk,ki->i", v, b.T @ test.sxx @ b, v)
    a = test.my - train.my
    c = b.T @ (test.mx - train.mx)
    av, cv = a @ v, c @ v
    sse = (
        test.syy.sum()
        - 2 * np.cumsum(cross)
        + np.cumsum(quad)
        + test.n * (a @ a - 2 * np.cumsum(av * cv) + np.cumsum(cv * cv))
    )
    return 1.0 - np.maximum(sse, 0.0) / test.syy.sum()


def effective_rank(train: MomentAccumulator, test: MomentAccumulator, frac: float = 0.9, rcond: float = 1e-6) -> int:
    """Smallest r with held-out R²(r) ≥ frac · R²(full); 0 when the full map explains nothing."""
    curve = reduced_rank_r2(train, test, rcond)
    full = curve[-1]
    if not full > 0:
        return 0
    return int(np.argmax(curve >= frac * full)) + 1


def minus_input(acc: MomentAccumulator) -> MomentAccumulator:
    """Moments of (x, y - x) from those of (x, y); needs d_in == d_out."""
    sxx, sxy = acc.sxx, acc.sxy
    return MomentAccumulator.from_moments(
        acc.n, acc.mx, acc.my - acc.mx, sxx, sxy - sxx, acc.syy - 2 * np.diag(sxy) + np.diag(sxx)
    )


def linearity_scores(train: MomentAccumulator, test: MomentAccumulator, rcond: float = 1e-6) -> dict:
    """The secretly-linear score of h_l → h_{l+1}, in-sample and held-out, with and without residual."""
    out = {}
    for suffix, (tr, te) in {"": (train, test), "_nores": (minus_input(train), minus_input(test))}.items():
        every = merged(tr, te)
        out[f"linearity_score{suffix}"] = r2_scores(fit_affine(every, rcond), every)["r2_lin"]
        out[f"linearity_score{suffix}_heldout"] = r2_scores(fit_affine(tr, rcond), te)["r2_lin"]
    return out


def kfold_interval(folds: list[MomentAccumulator], rcond: float = 1e-6) -> dict:
    """The k-fold mean of R²_lin over per-fold accumulators and its 95% interval (module docstring)."""
    k = len(folds)
    if k < 2:
        raise ValueError("k-fold needs at least 2 folds")
    scores = np.array(
        [r2_scores(fit_affine(merged(*(folds[:f] + folds[f + 1 :])), rcond), folds[f])["r2_lin"] for f in range(k)]
    )
    half = t_quantile(0.975, k - 1) * scores.std(ddof=1) / np.sqrt(k)
    mean = float(scores.mean())
    return {"r2_lin_cv": mean, "r2_lin_cv_low": mean - half, "r2_lin_cv_high": mean + half}
