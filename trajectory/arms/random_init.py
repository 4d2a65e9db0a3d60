"""The ``random-init`` arm: what the architecture alone gives, over several seeds.

For each seed ``s`` of ``manifest.random_init_seeds`` the manifest's architecture is built untrained and
drawn with ``[random_init] init`` (:func:`trajectory.engine.models.fresh_model`): by default the family's
*real* initialisation (for GPT-NeoX small_init / wang_init, ``gpt-neox``), or ``hf-default``, the model's
own ``from_config`` draw, to match a run that started from it; as a pure function of ``s``.  Each seed
is measured on the manifest's evaluation tokens and stored as one unit: revision ``init``, step 0, the
seed.  Its commit, ``init:<gpt-neox|hf-default>/config:<architecture hash>/draw:band``, names the draw, so
a cached seed is never re-measured and a changed architecture or init is a new unit.

**Disjoint from the twins.**  A twin of seed ``s`` starts from ``fresh_model(config, s)``.  A band draw of
seed ``s`` is ``fresh_model(config, band_seed(s))``, where :func:`band_seed` is a child of ``s`` under
numpy's ``SeedSequence`` with its own spawn key, a 63-bit integer ≥ 2³²: so no band draw is a twin's
init unless a twin seed is itself such a child.  That is checked before anything is measured
(:func:`check_disjoint`, refused), and the report flags any random-init row whose weights hash equals a
trained arm's step 0 (:func:`trajectory.verdicts.band.shared_inits`).  The band's draws are then independent of
the twins it judges: with draw ``s`` = twin ``s`` (as before), a twin's step 0 was one of the band's own
points and could lie at most (S − 1)/√S sd from its mean, so the init check could not fire.
"""

from __future__ import annotations

import time

import numpy as np

from ..config import Arm, Manifest, Provenance
from ..data.tokens import EvalTokens, eval_tokens
from ..engine.adapters import adapter_for
from ..engine.measure import check_positions, check_vocab, measure_blocks, needs_head
from ..engine.models import config_hash, fresh_model, init_name, weights_hash
from ..errors import ConfigError
from ..sources.resolve import architecture, manifest_tokenizer
from .base import BaseArm, Unit, metric_fields, unit_rows

#: The spawn key that makes a band draw's seed a child of its seed, apart from every twin's (module docstring).
BAND_SPAWN_KEY = 0xBA4D


def band_seed(seed: int) -> int:
    """The seed ``fresh_model`` draws random-init seed ``seed`` with: a 63-bit child of ``seed`` (spawn key
    :data:`BAND_SPAWN_KEY`), at least 2³², so never a small twin seed."""
    state = np.random.SeedSequence(seed, spawn_key=(BAND_SPAWN_KEY,)).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1)) | (1 << 32)


def check_disjoint(band_seeds: tuple[int, ...], twin_seeds: tuple[int, ...]) -> None:
    """Refuse a band draw that would be a twin's init: ``band_seed(s)`` equal to a twin seed."""
    shared = sorted(s for s in band_seeds if band_seed(s) in set(twin_seeds))
    if shared:
        raise ConfigError(
            f"random-init seed {shared[0]} draws the same weights as twin seed {band_seed(shared[0])} "
            "(the band must be independent of the twins it judges); choose other [twin] seeds"
        )


def init_commit(config, init: str | None = None) -> str:
    """The "commit" of a random-init draw: the init scheme (``gpt-neox``, ``hf-default``), the architecture's
    hash, and ``draw:band`` (seeded by :func:`band_seed`)."""
    return f"init:{init_name(config, init)}/config:{config_hash(config)}/draw:band"


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
    """Draw ``seed`` of ``config`` untrained (:func:`~trajectory.engine.models.fresh_model` of
    :func:`band_seed`, never a twin's init; the global RNG is left alone) and return its
    per-block metrics, with its weights hash and timings (``seconds_fetch``: the draw)."""
    t0 = time.perf_counter()
    model = fresh_model(config, band_seed(seed), with_head=needs_head(metric, config.model_type), init=init)
    model = model.to(device)
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
        twin_seeds = tuple(s for spec in manifest.twin_specs().values() for s in spec.seeds)  # every variant's
        check_disjoint(manifest.random_init_seeds, twin_seeds)
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
