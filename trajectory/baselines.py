"""Random-init baselines: what the architecture alone gives, over several seeds.

For each seed ``s`` of ``manifest.random_init_seeds`` the manifest's
architecture is built untrained and drawn with the family's *real*
initialisation (``Adapter.init``; for GPT-NeoX small_init / wang_init, see
:mod:`trajectory.initialisation`), as a pure function of ``s``.  Families
without an entry use their Hugging Face initialisation, drawn under a forked,
explicitly seeded torch RNG so the global RNG is never touched.  Each seed is
measured on the manifest's evaluation tokens and stored as one unit: arm
``random-init``, revision ``init``, step 0, the seed.  The unit key covers the
architecture (its config), the init, the seed, the evaluation tokens and the
metric config, so a cached seed is never re-measured and a changed input is.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from .adapters import adapter_for
from .errors import TrajectoryError
from .measure import measure_blocks, needs_head
from .store import Store, UnitOutcome, unit_key
from .tokens import EvalTokens, eval_tokens

ARM = "random-init"


def architecture(manifest):
    """The manifest's model config: its inline ``[model.config]`` table, or the config of its repo."""
    from transformers import AutoConfig

    from .loading import load_config, quiet_transformers

    if manifest.model_config is not None:
        quiet_transformers()
        cfg = dict(manifest.model_config)
        try:
            return AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        except ValueError as exc:
            first = str(exc).splitlines()[0]
            raise TrajectoryError(f"manifest {manifest.source.name}: [model.config] {first}") from None
    return load_config(*reference_revision(manifest))


def reference_revision(manifest) -> tuple[str, str | None]:
    """Where the architecture and tokenizer are read: the repo itself, or — for a local folder of
    checkpoints, which has no config of its own — its first scheduled revision that is on disk."""
    root = Path(manifest.repo)
    if not root.is_dir() or (root / "config.json").is_file():
        return manifest.repo, None
    for rev in manifest.schedule.revisions():
        if (root / rev / "config.json").is_file():
            return manifest.repo, rev
    raise TrajectoryError(f"manifest {manifest.source.name}: no scheduled revision of {manifest.repo} is on disk")


def manifest_tokenizer(manifest):
    """The manifest's tokenizer: ``[model] tokenizer`` (a Hub id, a folder or ``embedded:VOCAB``), else the repo's."""
    from .loading import load_tokenizer

    if manifest.tokenizer:
        return load_tokenizer(manifest.tokenizer)
    if manifest.repo is None:
        raise TrajectoryError(f"manifest {manifest.source.name}: [model] needs 'tokenizer' when only 'config' "
                              "is given, e.g. tokenizer = \"embedded:4096\"")
    return load_tokenizer(*reference_revision(manifest))


def config_hash(config) -> str:
    """16 hex digits of the architecture (the config minus the library version that wrote it)."""
    fields = {k: v for k, v in config.to_dict().items() if k not in ("transformers_version", "_name_or_path")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def init_name(config) -> str:
    init = adapter_for(config.model_type).init
    return init.__name__ if init is not None else "hf-default"


def fresh_model(config, seed: int, with_head: bool = False) -> torch.nn.Module:
    """An untrained model of ``config`` drawn with the family's real init, a pure function of ``seed``."""
    from transformers import AutoModel, AutoModelForCausalLM

    cls = AutoModelForCausalLM if with_head else AutoModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # the HF default draw, for families without a real init
        model = cls.from_config(config)
    init = adapter_for(config.model_type).init
    if init is not None:
        init(model, int(seed))
    return model


def weights_hash(model: torch.nn.Module) -> str:
    """16 hex digits of every parameter's name and float32 bytes, in ``named_parameters`` order."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_name(manifest) -> str:
    return manifest.repo or manifest.name


def _provenance(manifest, config, seed: int, tokens: EvalTokens) -> dict:
    return {"experiment": manifest.name, "arm": ARM, "model": model_name(manifest), "seed": int(seed),
            "revision": "init", "commit": f"config:{config_hash(config)}", "init": init_name(config),
            "data_hash": tokens.data_hash, "metric_config": manifest.metric.digest()}


def measure_seed(manifest, config, seed: int, tokens: EvalTokens, device: str = "cpu") -> list[dict]:
    """The rows of one random-init seed: one per block."""
    t0 = time.perf_counter()
    model = fresh_model(config, seed, with_head=needs_head(manifest.metric, config.model_type)).to(device).eval()
    wh = weights_hash(model)
    t1 = time.perf_counter()
    blocks = measure_blocks(model, tokens, manifest.metric, device=device)
    t2 = time.perf_counter()
    prov = _provenance(manifest, config, seed, tokens)
    base = {k: prov[k] for k in ("experiment", "arm", "model", "seed", "revision", "commit", "data_hash",
                                 "metric_config")}
    return [{**base, **b, "step": 0, "pythia_step": 0, "tokens_seen": 0, "weights_hash": wh,
             "seconds_fetch": t1 - t0, "seconds_measure": t2 - t1} for b in blocks]


def run_random_init(manifest, store: Store, device: str = "cpu", progress: bool = True) -> list[UnitOutcome]:
    """Measure every seed of ``manifest.random_init_seeds`` that the store lacks; one outcome per seed."""
    from tqdm.auto import tqdm

    config = architecture(manifest)
    adapter_for(config.model_type)  # an unsupported family fails before anything is built
    tokens = eval_tokens(manifest.data, manifest_tokenizer(manifest))
    outcomes = []
    for seed in tqdm(manifest.random_init_seeds, desc="random-init", unit="seed", disable=not progress):
        key = unit_key(_provenance(manifest, config, seed, tokens))
        label = f"{ARM} seed {seed}"
        if store.has(key):
            outcomes.append(UnitOutcome(key, label, "cached"))
            continue
        try:
            rows = measure_seed(manifest, config, seed, tokens, device)
        except (TrajectoryError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0]
            store.record_failure(key, {"arm": ARM, "seed": seed}, reason)
            outcomes.append(UnitOutcome(key, label, "failed", reason))
            continue
        store.write_unit(key, rows)
        outcomes.append(UnitOutcome(key, label, "done"))
    return outcomes
