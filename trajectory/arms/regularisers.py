"""Terms a twin can add to its training loss (``[twin] regulariser``), and the loss with them.

``kind = "cosine"`` (arXiv 2405.12250, the regulariser "aimed at reducing layer linearity"): with ``h_ℓ``
(batch, seq, d_model) the residual stream entering block ℓ (``h_0``: the embeddings) and ``h_{ℓ+1}`` the
block's output, for the model's ``L`` blocks

    R = (1/L) Σ_ℓ (1 / (B·T)) Σ_{b,t} cos(h_ℓ[b, t, :], h_{ℓ+1}[b, t, :]),    cos(u, v) = u·v / (‖u‖ ‖v‖)

the cosine over the d_model features of each token's two consecutive hidden states, averaged over every
token position of the batch (all B windows × T positions, padding-free) and over the L consecutive pairs.
The training loss is ``CE + λ · R`` (λ: ``weight``); minimising it pushes consecutive hidden states apart.
Computed on the same forward pass as the loss (hooks on the blocks, :class:`~trajectory.engine.adapters.Adapter`),
under the same autocast.  With λ = 0 nothing is hooked and the update is the plain one.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..engine.adapters import adapter_for


@contextmanager
def hidden_pairs(model: torch.nn.Module):
    """Within the context, the list it yields fills with each block's (input, output) hidden states."""
    adapter = adapter_for(model.config.model_type)
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for i, block in enumerate(adapter.blocks(model)):
        m_in, m_out = adapter.residual_modules(block)

        def pre(_m, args, kwargs, i=i):
            seen[i] = args[0] if args else kwargs["hidden_states"]

        def post(_m, _args, out, i=i):
            pairs.append((seen.pop(i), out[0] if isinstance(out, tuple) else out))

        handles.append(m_in.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m_out.register_forward_hook(post))
    try:
        yield pairs
    finally:
        for h in handles:
            h.remove()


def cosine_term(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``R`` of the module docstring from the blocks' (h_ℓ, h_{ℓ+1}) pairs, each (batch, seq, d_model)."""
    per_block = [F.cosine_similarity(a.float(), b.float(), dim=-1).mean() for a, b in pairs]  # (batch, seq) → ()
    return torch.stack(per_block).mean()


def loss_with(model: torch.nn.Module, ids: torch.Tensor, regulariser=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss to minimise, the plain next-token loss) of ``model`` on ``ids`` (batch, seq)."""
    if regulariser is None or regulariser.weight == 0:
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        return loss, loss
    with hidden_pairs(model) as pairs:
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    return loss + regulariser.weight * cosine_term(pairs), loss
