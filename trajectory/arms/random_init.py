"""The ``random-init`` arm: what the architecture alone gives, over several seeds.

For each seed ``s`` of ``manifest.random_init_seeds`` the manifest's architecture is built untrained and
drawn with ``[random_init] init`` (:func:`trajectory.engine.models.fresh_model`): by default the family's
*real* initialisation (for GPT-NeoX small_init / wang_init, ``gpt-neox``), or ``hf-default``, the model's
own ``from_config`` draw, to match a run that started from it; as a pure function of ``s``.  Each seed
is measured on the manifest's evaluation tokens and stored as one unit: revision ``init``, step 0, the
seed.  Its commit, ``init:<gpt-neox|hf-default>/config:<architecture hash>``, names the draw, so a cached
seed is never re-measured and a changed architecture or init is a new unit.
"""

from __future__ import annotations

import time

from ..config import Arm, Manifest, Provenance
from ..data.tokens import EvalTokens, eval_tokens
from ..engine.adapters import adapter_for
from ..engine.measure import check_positions, check_vocab, measure_blocks, needs_head
from ..engine.models import config_hash, fresh_model, init_name, weights_hash
from ..sources.resolve import architecture, manifest_tokenizer
from .base import BaseArm, Unit, metric_fields, unit_rows


def init_commit(config, init: str | None = None) -> str:
    """The "commit" of a random-init draw: the init scheme (``gpt-neox``, ``hf-default``) and the architecture's
    hash."""
    return f"init:{init_name(config, init)}/config:{config_hash(config)}"


def random_init_provenance(
    experiment: str, model: str, config, seed: int, data_hash: str, metric, init: str | None = None
) -> Provenance:
    """The unit of random-init draw ``seed``: revision ``init``, step 0, commit :func:`init_commit`; the same
    whether a sweep or a tracked run (:mod:`trajectory.track`) draws it, so either finds the other's units."""
    return Provenance(
        experiment=experiment,
        arm=str(Arm.RANDOM_INIT),
        model=model,
        revision="init",
        step=0,
        commit=init_commit(config, init),
        data_hash=data_hash,
        **metric_fields(metric),
        seed=seed,
        pythia_step=0,
        tokens_seen=0,
    )


def draw_and_measure(
    config, seed: int, tokens: EvalTokens, metric, init: str | None = None, device: str = "cpu"
) -> list[dict]:
    """Draw ``seed`` of ``config`` untrained (:func:`~trajectory.engine.models.fresh_model`; the global RNG is
    left alone) and return its
    per-block metrics, with its weights hash and timings (``seconds_fetch``: the draw)."""
    t0 = time.perf_counter()
    model = fresh_model(config, seed, with_head=needs_head(metric, config.model_type), init=init).to(device)
    wh = weights_hash(model)
    t1 = time.perf_counter()
    blocks = measure_blocks(model, tokens, metric, device=device)
    extra = {"weights_hash": wh, "seconds_fetch": t1 - t0, "seconds_measure": time.perf_counter() - t1}
    return [{**b, **extra} for b in blocks]


def measure_seed(manifest: Manifest, config, seed: int, tokens: EvalTokens, device: str = "cpu") -> list[dict]:
    """One random-init seed's per-block metrics, with its weights hash and timings."""
    return draw_and_measure(config, seed, tokens, manifest.metric, manifest.init_scheme, device)


class RandomInitArm(BaseArm):
    """Untrained draws of ``manifest``'s architecture, one unit per seed."""

    arm = str(Arm.RANDOM_INIT)

    def __init__(self, manifest: Manifest, options) -> None:
        self.manifest, self.device = manifest, options.device
        self.config = architecture(manifest)
        adapter_for(self.config.model_type)  # an unsupported family fails before anything is built
        init_name(self.config, manifest.init_scheme)  # so does an init the family does not have
        check_positions(self.config, manifest.data.seq_len, manifest.data.allow_long)
        self.tokens = eval_tokens(manifest.data, manifest_tokenizer(manifest))
        check_vocab(self.tokens, self.config.vocab_size)

    def plan(self) -> list[Unit]:
        m = self.manifest
        return [
            Unit(
                random_init_provenance(
                    m.name, m.model_name, self.config, seed, self.tokens.data_hash, m.metric, m.init_scheme
                ),
                group=f"seed{seed}",
            )
            for seed in m.random_init_seeds
        ]

    def run(self, unit: Unit) -> list[dict]:
        return unit_rows(
            unit.provenance, measure_seed(self.manifest, self.config, unit.provenance.seed, self.tokens, self.device)
        )
