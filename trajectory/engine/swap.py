"""The compression signal: replace one block's FFN by its fitted affine map, measure the LM loss.

For block l the FFN output ``y = FFN(x)`` is replaced by ``ŷ = Wᵀx + b``, the
map fitted on train tokens (:func:`trajectory.engine.stats.fit_affine`), and the mean
next-token cross-entropy on the held-out windows is compared with the intact
model's: ``swap_dloss = L_swap - L``, ``swap_dppl = exp(L_swap) - exp(L)``
(nats and perplexity).  One intact pass plus one pass per block, each with only
that block swapped (the paper's linear-swap experiment, arXiv 2606.19379).
Causal LMs only: an encoder has no next-token loss.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from .adapters import Adapter
from .stats import AffineFit


@contextmanager
def swapped(adapter: Adapter, block: torch.nn.Module, fit: AffineFit):
    """Within the context, ``block``'s FFN returns ``Wᵀx + b`` instead of its own output."""
    m_in, m_out = adapter.ffn_modules(block)
    ref = next(m_out.parameters())
    w = torch.as_tensor(fit.w, dtype=ref.dtype, device=ref.device)  # (d_in, d_out)
    b = torch.as_tensor(fit.b, dtype=ref.dtype, device=ref.device)
    seen: dict[str, torch.Tensor] = {}
    handles = [
        m_in.register_forward_pre_hook(lambda _m, args: seen.__setitem__("x", args[0])),
        m_out.register_forward_hook(lambda _m, _a, _out: seen.pop("x") @ w + b),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def lm_loss(model, ids: np.ndarray, batch_size: int, device: str = "cpu") -> float:
    """Mean next-token cross-entropy (nats) over every predicted position of ``ids`` (n_seq, seq_len)."""
    return float(window_losses(model, ids, batch_size, device).mean())  # every window predicts seq_len-1 tokens


@torch.no_grad()
def window_losses(model, ids: np.ndarray, batch_size: int, device: str = "cpu") -> np.ndarray:
    """(n_seq,) float64: each window's mean next-token cross-entropy (nats) over its seq_len − 1 predictions."""
    out = []
    for start in range(0, len(ids), batch_size):
        batch = torch.as_tensor(ids[start : start + batch_size], dtype=torch.long, device=device)
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()  # (b, seq-1, vocab)
        ce = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")  # (b, seq-1)
        out.append(ce.double().mean(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def swap_losses(
    model, adapter: Adapter, fits: list[AffineFit | None], heldout_ids: np.ndarray, batch_size: int, device: str = "cpu"
) -> list[dict]:
    """Per block: the held-out loss with that block's FFN swapped for its affine fit, and the increase."""
    base = lm_loss(model, heldout_ids, batch_size, device)
    out = []
    for i, (block, fit) in enumerate(zip(adapter.blocks(model), fits)):
        if fit is None:  # a block without a fit (non-finite activations) has no swap
            out.append({"block": i, "swap_loss": math.nan, "swap_dloss": math.nan, "swap_dppl": math.nan})
            continue
        with swapped(adapter, block, fit):
            loss = lm_loss(model, heldout_ids, batch_size, device)
        out.append(
            {"block": i, "swap_loss": loss, "swap_dloss": loss - base, "swap_dppl": math.exp(loss) - math.exp(base)}
        )
    return out
