"""Synthetic stores with known answers, for the verdict, figure and report tests (no model is run).

Design (12 blocks, Pythia's 154-step schedule, 5 random-init seeds):

* random-init: block ``b`` has value ``BASE[b] + OFFSETS[seed]``, so the band mean is
  ``BASE[b]`` and its sd is ``sd(OFFSETS)`` exactly.
* hub: block 0 stays at ``BASE`` (never leaves), block 1 jumps up by 0.2 at step 64
  and stays (persistent exit 64, above), block 2 jumps at 64 and comes back at 10 000
  (first exit 64, no persistent exit), block 3 drops by 0.25 from step 256 on
  (persistent exit 256, below the band); the other blocks rise smoothly.  Step
  ``MISSING_STEP`` has no unit at all; block ``BAD[1]`` at step ``BAD[0]`` has a non-ok
  status; one unit is recorded as failed.
* twin (optional): ``twin_schedule(steps, TWIN_BUDGET)``, each with its Pythia-equivalent step.
"""

from __future__ import annotations

import math
from pathlib import Path

from builders import key_of

from trajectory.config import pythia_steps, twin_schedule
from trajectory.store import Store

N_BLOCKS = 12
BASE = [0.55 + 0.03 * b for b in range(N_BLOCKS)]
OFFSETS = [-0.02, -0.01, 0.0, 0.01, 0.02]
STEPS = pythia_steps()
MISSING_STEP = 20_000
BAD = (30_000, 4)
FAILED_STEP = 40_000
SHORT_STEPS = pythia_steps(every=10_000, last=140_000)  # 24 steps: fast figures in tests
EXPECTED_PERSISTENT = {0: None, 1: 64, 2: None, 3: 256}
EXPECTED_VERDICT = {0: "within-band", 1: "learned-above", 2: "within-band", 3: "learned-below"}
TWIN_BUDGET = 2000  # the twin's updates; its steps are trajectory.twin.twin_schedule(schedule, TWIN_BUDGET)
MODEL = "EleutherAI/pythia-160m"
INF_SHIFT = 0.005  # every row's r2_lin_inf is its r2_lin + this: the correction moves no verdict
DATA_HASH = "d4t4h45h0000"
METRIC_CONFIG = "m3tr1cc0nf1g"


def hub_value(block: int, step: int) -> float:
    base = BASE[block]
    if block == 0:
        return base
    if block == 1:
        return base + (0.2 if step >= 64 else 0.0)
    if block == 2:
        return base + (0.2 if 64 <= step < 10_000 else 0.0)
    if block == 3:
        return base - (0.25 if step >= 256 else 0.0)
    return min(0.999, base + 0.3 * step / (step + 2000.0) * (1 if block % 2 else -0.5))


def twin_value(block: int, step: int) -> float:
    return min(0.999, BASE[block] + 0.25 * (1.0 - math.exp(-step / 400.0)) * ((block % 3) - 0.5))


def write_unit(store: Store, arm: str, seed: int, step: int, values, status=None, data_hash=DATA_HASH, **extra) -> None:
    """One unit of ``len(values)`` blocks; ``status`` maps a block to a non-ok reason."""
    revision = f"step{step}" if arm != "random-init" else f"init-seed{seed}"
    prov = dict(
        experiment="synth",
        arm=arm,
        model=MODEL,
        seed=seed,
        revision=revision,
        step=step,
        commit=f"c{arm[:2]}{step:06d}",
        data_hash=data_hash,
        metric_config=METRIC_CONFIG,
    )
    rows = [
        dict(
            prov,
            block=b,
            r2_lin=v,
            r2_lin_global=v,
            r2_median_dim=v,
            r2_lin_inf=v + INF_SHIFT,
            n_train=1000,
            n_test=250,
            cond=10.0,
            rank=768,
            status=(status or {}).get(b, "ok"),
            weights_hash=f"w{arm[:2]}{seed}{step}",
            **extra,
        )
        for b, v in enumerate(values)
    ]
    store.write_unit(key_of(prov), rows)


SEEDS = range(len(OFFSETS))


def build_store(root: Path, *, twin: bool = True, steps=SHORT_STEPS, seeds=SEEDS, blocks: int = N_BLOCKS) -> Store:
    """Write the synthetic design above (its first ``blocks`` blocks) into ``root`` and return the store."""
    store = Store(root)
    for seed in seeds:
        write_unit(store, "random-init", seed, 0, [v + OFFSETS[seed] for v in BASE[:blocks]])
    for step in steps:
        if step == MISSING_STEP:
            continue
        if step == FAILED_STEP:
            store.record_failure("f" * 24, {"arm": "hub", "revision": f"step{step}"}, "HTTP 503 from the Hub")
            continue
        status = {BAD[1]: "non-finite activations"} if step == BAD[0] else None
        write_unit(store, "hub", 0, step, [hub_value(b, step) for b in range(blocks)], status, pythia_step=step)
    if twin:
        for step, pythia in twin_schedule(steps, TWIN_BUDGET):
            write_unit(
                store,
                "twin",
                0,
                step,
                [twin_value(b, step) for b in range(blocks)],
                pythia_step=pythia,
                tokens_seen=step * 2048,
            )
    return store


def write_manifest(
    path: Path,
    store_dir: Path,
    *,
    arms=("hub", "random-init", "twin"),
    reference=True,
    short=True,
    blocks: int = N_BLOCKS,
) -> Path:
    """A manifest for the synthetic experiment, its store at ``store_dir`` (schedule ``SHORT_STEPS`` or ``STEPS``)."""
    ref = (
        "[reference]\nprofile = [" + ", ".join(f"{v:.2f}" for v in BASE[:blocks]) + ']\nlabel = "synthetic reference"\n'
        if reference
        else ""
    )
    twin = f"[twin]\nsteps = {TWIN_BUDGET}\n" if "twin" in arms else ""
    path.write_text(
        f'[experiment]\nname = "synth"\narms = {list(arms)!r}\ndescription = "synthetic store"\n'
        f'[model]\nrepo = "{MODEL}"\n'
        '[data]\ndataset = "Salesforce/wikitext:wikitext-103-raw-v1/validation-00000-of-00001.parquet"\n'
        "tokens = 32768\nseq_len = 128\n"
        + ("[schedule]\nevery = 10000\nlast = 140000\n" if short else "")
        + f'[sweep]\nstore = "{store_dir}"\n{twin}{ref}'.replace("'", '"'),
        encoding="utf-8",
    )
    return path


def series_store(root: Path, series: dict[int, dict[int, float]], *, arm: str = "hub", base: float = 0.5) -> Store:
    """One block: random-init seeds at ``base + OFFSETS``, and ``arm``'s seeds, ``series[seed] = {step: value}``."""
    store = Store(root)
    for seed, off in enumerate(OFFSETS):
        write_unit(store, "random-init", seed, 0, [base + off])
    for seed, points in series.items():
        for step, value in points.items():
            write_unit(store, arm, seed, step, [value], pythia_step=step)
    return store
