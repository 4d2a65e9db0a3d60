"""Families' real random initialisations, for random-init baselines and the twin.

GPT-NeoX (the code Pythia was trained with) does not use the Hugging Face
default N(0, 0.02) (EleutherAI/pythia issue 129).  With d = hidden size and
L = number of layers:

* small_init (Nguyen & Salazar 2019): std = sqrt(2 / (5 d)) for the input
  embedding, the fused QKV projection, ``dense_h_to_4h`` and the unembedding;
* wang_init (Wang, Mesh-Transformer-JAX): std = 2 / (L sqrt(d)) for the two
  matrices that write into the residual stream, ``attention.dense`` and
  ``dense_4h_to_h``;
* every bias zero; every LayerNorm weight one and bias zero.

The draw is a pure function of ``seed`` (an explicit ``torch.Generator``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

_WANG_SUFFIXES = ("attention.dense.weight", "mlp.dense_4h_to_h.weight")


def gpt_neox_stds(d_model: int, n_layers: int) -> tuple[float, float]:
    """(small_init std, wang_init std) for a GPT-NeoX of this shape."""
    return math.sqrt(2.0 / (5.0 * d_model)), 2.0 / (n_layers * math.sqrt(d_model))


@torch.no_grad()
def init_gpt_neox(model: nn.Module, seed: int) -> None:
    """Re-draw every parameter of a GPT-NeoX model in place with GPT-NeoX's init."""
    cfg = model.config
    small, wang = gpt_neox_stds(cfg.hidden_size, cfg.num_hidden_layers)
    gen = torch.Generator().manual_seed(int(seed))
    norms = {name for name, mod in model.named_modules() if isinstance(mod, nn.LayerNorm)}
    for name, p in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        if owner in norms:
            p.fill_(1.0 if leaf == "weight" else 0.0)
        elif leaf == "bias":
            p.zero_()
        else:
            std = wang if name.endswith(_WANG_SUFFIXES) else small
            p.copy_(torch.empty(p.shape, dtype=torch.float32).normal_(0.0, std, generator=gen))
