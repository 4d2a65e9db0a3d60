"""What a replaced FFN costs on the held-out windows, with a paired 95% interval over windows.

A causal LM is scored by each held-out window's mean next-token cross-entropy (nats;
:func:`~trajectory.engine.swap.window_losses`); the cost of an ablation in window w is the paired
difference ``d_w = L_w(ablated) − L_w(intact)``, the same window through both models.  The reported
``dloss`` is the mean of ``d_w`` (every window predicts the same number of tokens, so it is the increase of
the token-mean loss), and its 95% interval is the paired t interval over the n held-out windows,

    mean(d) ± t(0.975, n − 1) · sd(d) / √n,

which treats windows as independent draws (tokens within a window are not, which is why the window and not
the token is the unit).  Perplexity is ``exp(loss)``, so the ratio of the ablated to the intact perplexity is
``exp(dloss)``, with the interval ``[exp(low), exp(high)]``; ``dppl = exp(L_ablated) − exp(L_intact)``.

An encoder has no next-token loss: it is scored by the relative error of its final hidden states,
``e_w = ‖H_w(ablated) − H_w(intact)‖_F / ‖H_w(intact)‖_F`` per window (seq_len × d_model), and the same t
interval over windows (``rel_error``, ``rel_error_low``, ``rel_error_high``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .adapters import Adapter
from .swap import window_losses
from .tdist import t_quantile


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t interval ``mean ± t((1+level)/2, n−1) · sd / √n`` (NaN bounds for n < 2)."""
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    half = t_quantile((1 + level) / 2, n - 1) * float(values.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


class HeldoutCost:
    """The held-out windows and the intact model's per-window values; :meth:`summary` scores a variant."""

    def __init__(self, model, adapter: Adapter, ids: np.ndarray, batch_size: int, device: str = "cpu") -> None:
        self.ids, self.batch_size, self.device, self.causal = ids, batch_size, device, adapter.causal
        self.n_windows = len(ids)
        if self.causal:
            self.base = window_losses(model, ids, batch_size, device)  # (n_windows,)
        else:
            self.reference = self._states(model)

    @torch.no_grad()
    def _states(self, model) -> list[torch.Tensor]:
        out = []
        for start in range(0, len(self.ids), self.batch_size):
            batch = torch.as_tensor(self.ids[start : start + self.batch_size], dtype=torch.long, device=self.device)
            out.append(model(input_ids=batch).last_hidden_state.double())  # (b, seq, d)
        return out

    def per_window(self, model) -> np.ndarray:
        """(n_windows,): the paired differences ``d_w`` (causal) or the relative errors ``e_w`` (encoder)."""
        if self.causal:
            return window_losses(model, self.ids, self.batch_size, self.device) - self.base
        errors = []
        for ref, got in zip(self.reference, self._states(model)):
            num = (got - ref).flatten(1).norm(dim=1)
            errors.append((num / ref.flatten(1).norm(dim=1)).cpu().numpy())
        return np.concatenate(errors)

    @property
    def intact_loss(self) -> float:
        return float(self.base.mean()) if self.causal else math.nan

    def summary(self, model) -> dict[str, float]:
        """The variant's held-out cost: loss, dloss [low, high], dppl, ppl ratio [low, high]; or for an
        encoder rel_error [low, high] (module docstring)."""
        diffs = self.per_window(model)
        mean, low, high = t_interval(diffs)
        if not self.causal:
            return {"rel_error": mean, "rel_error_low": low, "rel_error_high": high}
        base = self.intact_loss
        return {
            "loss": base + mean,
            "dloss": mean,
            "dloss_low": low,
            "dloss_high": high,
            "dppl": math.exp(base + mean) - math.exp(base),
            "ppl_ratio": math.exp(mean),
            "ppl_ratio_low": math.exp(low) if math.isfinite(low) else math.nan,
            "ppl_ratio_high": math.exp(high) if math.isfinite(high) else math.nan,
        }

    def cost(self, model) -> float:
        """One number to compare variants by: dloss (causal) or the mean relative error (encoder)."""
        return float(self.per_window(model).mean())

    def interval(self, model) -> tuple[float, float, float]:
        """(mean, low, high) of :meth:`per_window`: the cost and its paired 95% t interval."""
        return t_interval(self.per_window(model))


def remove_costs(model, adapter: Adapter, ok: list[bool], heldout: HeldoutCost) -> list[dict]:
    """Per block (where ``ok``): ``remove_loss`` and ``remove_dloss``, the held-out cost of its FFN outputting 0."""
    from .ablation import as_module, patched

    rows = []
    for i, (block, good) in enumerate(zip(adapter.blocks(model), ok)):
        if not good:
            rows.append({})
            continue
        with patched(adapter, model, {i: as_module({}, block)}):
            removed = heldout.cost(model)
        rows.append({"remove_loss": heldout.intact_loss + removed, "remove_dloss": removed})
    return rows


def lowrank_ranks(model, adapter: Adapter, trains: list, heldout: HeldoutCost, tol: float, rcond: float) -> list[dict]:
    """Per block (``trains[i]``: its train moments, None to skip): ``lowrank_rank``, the smallest r of
    :func:`~trajectory.engine.ablation.rank_ladder` whose rank-r map alone costs ``dloss ≤ tol`` nats, and
    that ``lowrank_dloss``; both None, with ``status_lowrank`` saying so, when not even r = d does."""
    from .ablation import Ablation, as_module, fit_map, patched, rank_ladder

    rows = []
    for i, (block, train) in enumerate(zip(adapter.blocks(model), trains)):
        row = {} if train is None else {"lowrank_rank": None, "lowrank_dloss": None}
        if train is not None:
            row["status_lowrank"] = f"no rank within {tol} nats (not even the full affine map)"
        for r in rank_ladder(train.d_out) if train is not None else ():
            with patched(adapter, model, {i: as_module(fit_map(Ablation("rank", r), train, rcond), block)}):
                dloss = heldout.cost(model)
            if dloss <= tol:
                row.update(lowrank_rank=r, lowrank_dloss=dloss, status_lowrank="ok")
                break
        rows.append(row)
    return rows
