"""Models built from an architecture alone, and the two fingerprints that go into provenance.

* :func:`fresh_model` draws an untrained model of a config with the family's real initialisation
  (:attr:`~trajectory.engine.adapters.Adapter.init`), as a pure function of the seed.
* :func:`weights_hash` is the one hash of a model's weights that every arm stores: sha256 over the
  *trunk's* state dict (the model without its LM head, so loading the head for the swap metric does not
  change it), tensors in sorted name order, each as ``name|dtype|shape|`` followed by its raw bytes.
  Persistent buffers are included, non-persistent ones (e.g. rotary ``inv_freq``) are not, as in
  ``state_dict``.  16 hex digits.
* :func:`config_hash` fingerprints an architecture: sha256 of its config minus the fields that name
  where it came from (``transformers_version``, ``_name_or_path``).
"""

from __future__ import annotations

import hashlib
import json

import torch

from ..config import INIT_SCHEMES
from ..errors import ConfigError
from .adapters import adapter_for
from .initialisation import init_gpt_neox


def init_name(config, init: str | None = None) -> str:
    """The initialisation a draw of ``config`` uses: ``init`` checked against the family, or, when ``init`` is
    None, the family's real one (``gpt-neox`` for GPT-NeoX; ``hf-default``, Hugging Face's own draw, for
    families whose real init is the library's).  See :data:`trajectory.config.INIT_SCHEMES`."""
    real = adapter_for(config.model_type).init
    family = "gpt-neox" if real is init_gpt_neox else "hf-default"
    if init is None:
        return family
    if init not in INIT_SCHEMES:
        raise ConfigError(f"unknown init {init!r}; choose from {', '.join(INIT_SCHEMES)}")
    if init == "gpt-neox" and family != "gpt-neox":
        raise ConfigError(f"init 'gpt-neox' (small_init/wang_init) is GPT-NeoX's; a {config.model_type} model has "
                          "no such init: use 'hf-default'")  # fmt: skip
    return init


def fresh_model(config, seed: int, with_head: bool = False, init: str | None = None) -> torch.nn.Module:
    """An untrained model of ``config``, a pure function of ``seed``; the global torch RNG is left alone.

    ``init`` (:func:`init_name`): the family's real initialisation (``None``, the default, or
    ``"gpt-neox"``), or ``"hf-default"``, the model's own ``from_config`` draw under ``torch.manual_seed(seed)``.
    """
    from transformers import AutoModel, AutoModelForCausalLM

    scheme = init_name(config, init)
    cls = AutoModelForCausalLM if with_head else AutoModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # the HF default draw, for families without a real init
        model = cls.from_config(config)
    if scheme == "gpt-neox":
        init_gpt_neox(model, int(seed))
    return model


def weights_hash(model: torch.nn.Module) -> str:
    """16 hex digits of the trunk's state dict (see the module docstring for exactly what is hashed)."""
    trunk = adapter_for(model.config.model_type).trunk(model)
    state = trunk.state_dict()
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def config_hash(config) -> str:
    """16 hex digits of the architecture (the config minus the library version that wrote it)."""
    values = {k: v for k, v in config.to_dict().items() if k not in ("transformers_version", "_name_or_path")}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
