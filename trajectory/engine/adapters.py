"""Model-family specifics, in one table keyed by ``config.model_type``.

An :class:`Adapter` says where a family keeps its blocks and, inside a block,
which module receives the FFN input x (after the block's norm) and which module
returns the FFN output y (before dropout, the residual add or a post-LN).  The
probe hooks those two modules; nothing else in the package names a family.

=========  =====================  ==================  =====================
family     blocks                 x = input of        y = output of
=========  =====================  ==================  =====================
gpt_neox   ``layers``             ``mlp``             ``mlp``
gpt2       ``h``                  ``mlp``             ``mlp``
llama      ``layers``             ``mlp``             ``mlp``
qwen2      ``layers``             ``mlp``             ``mlp``
mistral    ``layers``             ``mlp``             ``mlp``
olmo       ``layers``             ``mlp``             ``mlp``
olmo2      ``layers``             ``mlp``             ``mlp``
bert       ``encoder.layer``      ``intermediate``    ``output.dense``
=========  =====================  ==================  =====================

Qwen2, Mistral and OLMo are Llama's pre-norm block (OLMo with a LayerNorm that has
no weight or bias): ``h' = h + attn(norm₁(h))``, ``h'' = h' + mlp(norm₂(h'))``, so
x = norm₂(h') and y = mlp(x), as for Llama.  OLMo-2 norms the sublayers' *outputs*
instead: ``h' = h + norm₁(attn(h))``, ``h'' = h' + norm₂(mlp(h'))``.  Its MLP
receives the residual stream h' itself (no norm precedes it), and its output is
RMS-normed before the add.  x = h' and y = mlp(h'), the MLP module's own input and
output, as for every other family: R²_lin measures how linear the FFN map is, and
norm₂ is not part of it (BERT's post-LN is left out the same way).  Fitting
norm₂(mlp(h')) instead would fold the RMSNorm's per-token rescaling, a
nonlinearity of its own, into the map.

:meth:`Adapter.replace_ffn` puts a module in the FFN's place, so that ``y = module(x)``: the FFN module
itself where x and y belong to one module; for BERT the ``intermediate`` module becomes the identity (its
output is ``output.dense``'s input, so x reaches ``output.dense``'s place unchanged) and ``output.dense``
becomes the module (:mod:`trajectory.compress` uses it for replaced and removed FFNs).

``init`` is the family's real initialisation for random-init baselines and the
twin (``None``: the Hugging Face default is the family's own).  ``rotary``: the
family encodes positions by rotation (GPT-NeoX, Llama), so a window longer than
``max_position_embeddings`` runs but reaches positions never trained; the others
learn one embedding per position and have none beyond it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from ..errors import TrajectoryError
from .initialisation import init_gpt_neox


def _path(obj, dotted: str):
    for name in dotted.split("."):
        obj = getattr(obj, name)
    return obj


def _set(obj, dotted: str, module: nn.Module) -> tuple[str, nn.Module]:
    """Put ``module`` at ``dotted`` under ``obj``; returns (dotted, the module that was there)."""
    head, _, last = dotted.rpartition(".")
    parent = _path(obj, head) if head else obj
    old = getattr(parent, last)
    setattr(parent, last, module)
    return dotted, old


@dataclass(frozen=True)
class Adapter:
    """Where the FFN of each block lives, for one model family."""

    model_type: str
    blocks_path: str
    ffn_in_path: str
    ffn_out_path: str
    causal: bool = True
    init: Callable[[nn.Module, int], None] | None = None
    rotary: bool = False

    def trunk(self, model: nn.Module) -> nn.Module:
        """The model without its head (``base_model`` is the trunk itself for a bare trunk)."""
        return getattr(model, "base_model", model)

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        return list(_path(self.trunk(model), self.blocks_path))

    def ffn_modules(self, block: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(module whose first positional input is x, module whose output is y)."""
        return _path(block, self.ffn_in_path), _path(block, self.ffn_out_path)

    def replace_ffn(self, block: nn.Module, module: nn.Module) -> Callable[[], None]:
        """Make ``block``'s FFN compute ``y = module(x)`` (module docstring); returns what undoes it."""
        swaps = [(self.ffn_out_path, module)]
        if self.ffn_in_path != self.ffn_out_path:
            swaps.insert(0, (self.ffn_in_path, nn.Identity()))
        undo = [_set(block, path, new) for path, new in swaps]

        def restore() -> None:
            for path, old in reversed(undo):
                _set(block, path, old)

        return restore

    def residual_modules(self, block: nn.Module) -> tuple[nn.Module, nn.Module]:
        """The block itself: its first positional input is h_l, its output h_{l+1}."""
        return block, block


ADAPTERS: dict[str, Adapter] = {
    a.model_type: a
    for a in (
        Adapter("gpt_neox", "layers", "mlp", "mlp", init=init_gpt_neox, rotary=True),
        Adapter("gpt2", "h", "mlp", "mlp"),
        Adapter("llama", "layers", "mlp", "mlp", rotary=True),
        Adapter("qwen2", "layers", "mlp", "mlp", rotary=True),
        Adapter("mistral", "layers", "mlp", "mlp", rotary=True),
        Adapter("olmo", "layers", "mlp", "mlp", rotary=True),
        Adapter("olmo2", "layers", "mlp", "mlp", rotary=True),
        Adapter("bert", "encoder.layer", "intermediate", "output.dense", causal=False),
        # BLOOM's MLP adds the residual itself (forward(hidden_states, residual)): y is its down-projection's
        # output, before that add; x its first input, the post-attention LayerNorm's output (ALiBi: no positions)
        Adapter("bloom", "h", "mlp", "mlp.dense_4h_to_h"),
    )
}


def adapter_for(model_type: str) -> Adapter:
    """The adapter of ``model_type``, or a one-line error naming the supported ones."""
    try:
        return ADAPTERS[model_type]
    except KeyError:
        supported = ", ".join(sorted(ADAPTERS))
        raise TrajectoryError(
            f"unsupported architecture {model_type!r}; supported model_type values: {supported}"
        ) from None
