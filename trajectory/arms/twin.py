"""The ``twin`` arm: train the manifest's architecture ourselves from random init, one run per seed, and
measure every block at every scheduled step, in the loop.

Each seed ``s`` of ``[twin] seeds`` is its own run: the model is drawn with the family's real init from
``s`` (the random-init band draws from child seeds, never a twin's init: :mod:`trajectory.arms.random_init`),
its data order is a child of ``s`` (:func:`~trajectory.arms.training.data_seed`; shards, local or on the
Hub, are read in Pythia's order whatever the seed, so there the seeds differ in their init and dropout only),
and it is stored under seed ``s`` in its own folder ``<store>/twin/<digest>/``.  The digest hashes the
training spec, the seed, the architecture, the training tokens, the precision (fp32 on a CPU, bf16 autocast
on CUDA) and ``[twin] threads`` (every seed trains with that many torch threads, whatever ``--workers`` gives
its process: the weights of a sequential and a parallel sweep are the same computation), so a changed input
is a new run.

Schedule (:func:`~trajectory.schedule.twin_schedule`): the manifest's steps mapped onto the twin's budget
by fraction of training.  Each unit is one scheduled step: :meth:`TwinArm.run` trains the seed's run up
to that step (passing cached steps without measuring them), measures it on the manifest's evaluation
tokens (float32 weights, no autocast), and saves the training state, so a run resumes from its last
measured step.  With ``save_checkpoints`` each scheduled step is also saved as a model folder that
:mod:`trajectory.sources.loading` opens with ``revision="step<t>"``.

Cost (:func:`training_cost`): before a CPU sweep the scheduler times an update of a short batch and
extrapolates by tokens, so a multi-day CPU run is never started silently (:mod:`trajectory.scheduler`).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..config import (
    PERTURBATION,
    TWIN_PROBE_TOKENS,
    Arm,
    Manifest,
    MetricConfig,
    Provenance,
    TwinSpec,
    twin_schedule,
    variant_arm,
)
from ..data.tokens import EvalTokens, eval_tokens
from ..data.traindata import TrainTokens, seeded, train_tokens
from ..engine.measure import check_positions, measure_blocks
from ..engine.models import config_hash, fresh_model, weights_hash
from ..errors import ConfigError, LoadError, TrajectoryError, TrajectoryWarning
from ..progress import progress_bar
from ..sources.resolve import architecture, manifest_tokenizer
from .base import BaseArm, Unit, metric_fields, unit_rows
from .perturb import perturbed_model
from .training import (
    data_seed,
    dropout_seed,
    load_state,
    lr_at,
    make_optimizer,
    save_checkpoint,
    save_state,
    set_rng_state,
    torch_threads,
    update,
)

ARM = str(Arm.TWIN)
TWIN_VERSION = 3  # bumped when a change to the training loop could change a trained weight
# (2: seeded RNG; 3: every seed trains with [twin] threads torch threads, not the count --workers left)


@dataclass
class TwinRun:
    """One seed's run, resolved from a manifest: what it trains on, where it lives, which steps it measures."""

    manifest: Manifest
    spec: TwinSpec
    seed: int
    config: object
    tokenizer: object
    eval: EvalTokens
    train: TrainTokens
    digest: str
    folder: Path
    points: list[tuple[int, int]] = field(default_factory=list)
    arm: str = ARM

    @property
    def per_batch(self) -> int:
        return self.spec.per_batch

    def tokens_seen(self, step: int) -> int:
        return step * self.per_batch * self.spec.seq_len

    def provenance(self, step: int, pythia_step: int, metric: MetricConfig) -> Provenance:
        return Provenance(
            experiment=self.manifest.name,
            arm=self.arm,
            model=self.manifest.model_name,
            revision=f"step{step}",
            step=step,
            commit=f"twin:{self.digest}",
            data_hash=self.eval.data_hash,
            **metric_fields(metric),
            seed=self.seed,
            pythia_step=pythia_step,
            tokens_seen=self.tokens_seen(step),
        )

    def batch(self, t: int, device: str) -> torch.Tensor:
        """(per_batch, seq_len) ids of update ``t``."""
        return torch.as_tensor(self.train.batch(t, self.per_batch, data_seed(self.seed)), device=device)


def run_digest(spec: TwinSpec, seed: int, config, train: TrainTokens, device: str) -> str:
    """16 hex digits of everything that decides the run's weights (see the module docstring)."""
    precision = "bf16-autocast" if device.startswith("cuda") else "fp32"
    blob = json.dumps(
        {
            "spec": spec.training_fields(),
            "seed": seed,
            "config": config_hash(config),
            "train": train.data_hash,
            "precision": precision,
            "version": TWIN_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_disjoint(manifest: Manifest, spec: TwinSpec) -> None:
    kind, _, arg = spec.train_data.partition(":")
    data = manifest.data
    if kind == "text" and data.kind == "text" and Path(arg).resolve() == Path(data.path).resolve():
        raise ConfigError(
            f"manifest {manifest.source.name}: [twin] train_data and [data] are the same file "
            f"{arg}; the twin's evaluation tokens must be disjoint from its training tokens"
        )


def plan_runs(manifest: Manifest, store_root: Path, device: str = "cpu") -> list[TwinRun]:
    """Every seed's run of the manifest's twin and of each of its variants (``[twin.variants.NAME]``, the arm
    ``twin:NAME``): architecture, tokens, digest, folder and schedule.  A variant is planned exactly as the
    plain twin is, from its own spec; so its digest, folder and resume are its own."""
    if manifest.twin is None:
        raise ConfigError(f"manifest {manifest.source.name}: arm 'twin' needs a [twin] table")
    return [
        run
        for arm, spec in manifest.twin_specs().items()
        for run in _spec_runs(manifest, arm, spec, store_root, device)
    ]


def _spec_runs(manifest: Manifest, arm: str, spec: TwinSpec, store_root: Path, device: str) -> list[TwinRun]:
    _check_disjoint(manifest, spec)
    config = architecture(manifest)
    check_positions(config, manifest.data.seq_len, manifest.data.allow_long)
    check_positions(config, spec.seq_len, True, "[twin] seq_len")  # rotary: the twin trains at that length
    tokenizer = manifest_tokenizer(manifest)
    if len(tokenizer) > config.vocab_size:
        raise ConfigError(
            f"manifest {manifest.source.name}: tokenizer has {len(tokenizer)} tokens but "
            f"vocab_size is {config.vocab_size}; raise [model.config] vocab_size"
        )
    n_tokens = spec.steps * spec.per_batch * spec.seq_len
    shared = None if seeded(spec.train_data) else train_tokens(spec.train_data, tokenizer, n_tokens, spec.seq_len)
    evals = eval_tokens(manifest.data, tokenizer)
    points = twin_schedule(manifest.schedule.steps, spec.steps)
    runs = []
    for seed in spec.seeds:  # a control's tokens are drawn from the seed: each seed has its own
        train = shared or train_tokens(spec.train_data, tokenizer, n_tokens, spec.seq_len, seed=seed)
        digest = run_digest(spec, seed, config, train, device)
        runs.append(
            TwinRun(
                manifest,
                spec,
                seed,
                config,
                tokenizer,
                evals,
                train,
                digest,
                Path(store_root) / "twin" / digest,
                points,
                arm,
            )
        )
    return runs


@dataclass(frozen=True)
class TwinCost:
    """What training every seed of a twin would take here, extrapolated by tokens from a timed update.

    ``seconds = probe_seconds · tokens / (probe_rows · probe_len)``: time is taken as proportional to
    tokens.  An extrapolation, not a measurement: attention's cost per token grows with the window, and the
    optimiser step costs the same per update however many tokens it follows.
    """

    probe_rows: int
    probe_len: int
    probe_seconds: float
    tokens: int

    @property
    def seconds(self) -> float:
        return self.probe_seconds * self.tokens / (self.probe_rows * self.probe_len)

    def describe(self) -> str:
        """``about 71 days (extrapolated by tokens from one update of 1×256 tokens: 3.1 s; 262,272,000 tokens)``."""
        return (
            f"about {duration(self.seconds)} (extrapolated by tokens from one update of {self.probe_rows}×"
            f"{self.probe_len} tokens that took {self.probe_seconds:.2g} s, to {self.tokens:,} tokens)"
        )


def training_flops(manifest: Manifest) -> float:
    """6 · parameters · training tokens of every seed: the usual count of a transformer's training FLOPs
    (forward 2, backward 4 per parameter and token), from the architecture alone (built on the meta device)."""
    spec = manifest.twin
    if spec is None:
        raise ConfigError(f"manifest {manifest.source.name}: arm 'twin' needs a [twin] table")
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(architecture(manifest)).parameters())
    return 6.0 * params * spec.steps * spec.per_batch * spec.seq_len * len(spec.seeds)


def training_cost(manifest: Manifest, device: str = "cpu", probe_tokens: int = TWIN_PROBE_TOKENS) -> TwinCost:
    """Time clipped AdamW updates of the twin's model on a batch of ≤ ``probe_tokens`` random ids, after a
    2-token warm-up update (allocations, optimiser state), and scale the faster of two (a momentary load
    spike must not decide) to every seed's training tokens.  Timed with ``[twin] threads`` torch threads, as
    every seed trains (:class:`TwinArm`)."""
    spec = manifest.twin
    if spec is None:
        raise ConfigError(f"manifest {manifest.source.name}: arm 'twin' needs a [twin] table")
    config = architecture(manifest)
    length = min(spec.seq_len, probe_tokens)
    rows = max(1, min(spec.per_batch, probe_tokens // length))
    with torch_threads(spec.threads), torch.random.fork_rng(devices=[]):  # the probe draws dropout masks
        torch.manual_seed(0)
        model = fresh_model(config, spec.seeds[0], with_head=True).to(device).train()
        opt = make_optimizer(model, spec)
        ids = torch.randint(0, config.vocab_size, (rows, length), device=device)
        update(model, opt, ids[:1, :2], spec.lr, spec.clip, device)
        seconds = min(_timed(update, model, opt, ids, spec.lr, spec.clip, device) for _ in range(2))
    return TwinCost(rows, length, seconds, spec.steps * spec.per_batch * spec.seq_len * len(spec.seeds))


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def duration(seconds: float) -> str:
    """A duration in the largest unit that keeps it ≥ 1: ``40 s``, ``12 min``, ``3.1 h``, ``71 days``."""
    for unit, size in (("days", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            value = seconds / size
            return f"{value:.2g} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{seconds:.2g} s"


class _Training:
    """A run in memory: its model, optimiser, the updates done so far and their losses."""

    def __init__(self, run: TwinRun, first_pending: int, device: str) -> None:
        self.run, self.device = run, device
        self.model = fresh_model(run.config, run.seed, with_head=True).to(device).train()
        self.opt = make_optimizer(self.model, run.spec)
        self.t, self.losses = 0, []
        torch.manual_seed(dropout_seed(run.seed))
        state = _saved_state(run, first_pending, device)
        if state is not None and state["step"] <= first_pending:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.t, self.losses = int(state["step"]), [tuple(x) for x in state["losses"]]
            if "rng" in state:
                set_rng_state(state["rng"], device)
        self.scheduled = {t for t, _ in run.points}

    def advance_to(self, step: int, bar=None) -> float:
        """Train up to ``step`` updates, saving the state at every scheduled step passed; returns seconds."""
        start = time.perf_counter()
        while self.t < step:
            lr = lr_at(self.t, self.run.spec)
            loss = train_step(self.run, self.model, self.opt, self.t, self.device)
            self.losses.append((self.t + 1, loss, lr))
            self.t += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
            if self.t in self.scheduled and self.t < step:
                self.save()
        return time.perf_counter() - start

    def save(self) -> None:
        save_state(self.run.folder, self.t, self.model, self.opt, self.losses, self.device)
        if self.run.spec.save_checkpoints:
            save_checkpoint(self.run.folder, self.t, self.model, self.run.tokenizer)


def _saved_state(run: TwinRun, first_pending: int, device: str) -> dict | None:
    """The run's saved state; a damaged one is reported in one line and the run trains again from its init
    (deterministic, dropout included, so the steps it passes reproduce the stored units, which stay cached)."""
    try:
        return load_state(run.folder, device)
    except LoadError as exc:
        warnings.warn(
            f"twin seed {run.seed}: {exc}; training this run again from step 0 up to step {first_pending} "
            "(its stored units are kept)",
            TrajectoryWarning,
            stacklevel=2,
        )
        return None


def train_step(run: TwinRun, model, opt, t: int, device: str) -> float:
    """Update ``t`` (0-based) of ``run``: its batch, its learning rate, one clipped AdamW step."""
    return update(model, opt, run.batch(t, device), lr_at(t, run.spec), run.spec.clip, device, run.spec.regulariser)


def measure_step(run: TwinRun, model, device: str, metric: MetricConfig) -> tuple[list[dict], str, float]:
    """(per-block rows, weights hash, seconds) of ``model`` now, measured on the run's evaluation tokens."""
    start = time.perf_counter()
    blocks = measure_blocks(model, run.eval, metric, device=device)
    return blocks, weights_hash(model), time.perf_counter() - start


class TwinArm(BaseArm):
    """The twin's runs (the plain twin and every variant), one group of units per run; units of a run go in step
    order, and the perturbation null's draws at a step follow that step's unit in its run's group."""

    arm = ARM
    chained = True  # a run cannot skip a failed step

    def __init__(self, manifest: Manifest, options) -> None:
        self.manifest, self.device, self.progress = manifest, options.device, options.progress
        self.runs = {(run.arm, run.seed): run for run in plan_runs(manifest, manifest.store_dir, self.device)}
        self._active: dict[tuple[str, int], _Training] = {}
        self._bars: dict[tuple[str, int], object] = {}
        self._last = {u.group: u.key for u in self.plan()}  # a run's model is freed after its group's last unit

    def plan(self) -> list[Unit]:
        units = []
        perturb = self.manifest.perturbation
        steps = set(self.manifest.expected_steps().get(PERTURB_ARM, ())) if perturb else set()
        for (arm, seed), run in self.runs.items():
            group = f"seed{seed}" if arm == ARM else f"{arm} seed{seed}"
            for i, (t, pythia) in enumerate(run.points):
                metric = self.manifest.metric.at(i, len(run.points))
                units.append(Unit(run.provenance(t, pythia, metric), group=group, metric=metric))
                if arm == ARM and perturb is not None and seed == perturb.seed and t in steps:
                    core = self.manifest.metric.core()
                    units += [Unit(perturbation_provenance(run, t, pythia, k, core, perturb.draw_seed), group=group,
                                   metric=core) for k in range(perturb.draws)]  # fmt: skip
        return units

    def _training(self, arm: str, seed: int, step: int) -> _Training:
        key = (arm, seed)
        if key not in self._active:
            self._active[key] = _Training(self.runs[key], step, self.device)
            desc = f"{arm} {self.manifest.name} seed {seed}"
            self._bars[key] = progress_bar(
                self.runs[key].points[-1][0], desc, "step", self.progress, initial=self._active[key].t
            )
        return self._active[key]

    def run(self, unit: Unit) -> list[dict]:
        """Train the unit's seed up to its step and measure it, with ``[twin] threads`` torch threads
        whatever the process has (a sequential sweep, a ``--workers`` process), so the weights are the same."""
        with torch_threads(self.manifest.twin.threads):
            return self._run(unit)

    def _run(self, unit: Unit) -> list[dict]:
        p = unit.provenance
        key = (ARM, self.manifest.perturbation.seed) if p.arm == PERTURB_ARM else (p.arm, p.seed)
        training = self._training(*key, p.step)
        if training.t > p.step:
            raise TrajectoryError(f"{unit.label}: the run is at step {training.t}, past step {p.step}")
        seconds_train = training.advance_to(p.step, self._bars[key])
        model = training.model
        if p.arm == PERTURB_ARM:
            model = perturbed_model(training.run, model, p.step, p.seed, self.manifest.perturbation.draw_seed,
                                    self.device)  # fmt: skip
        blocks, wh, seconds = measure_step(training.run, model, self.device, unit.metric or self.manifest.metric)
        if p.arm != PERTURB_ARM:
            training.save()
        if unit.key == self._last.get(unit.group):  # the run's last unit: free its model and optimiser
            self._active.pop(key)
            self._bars.pop(key).close()
        return unit_rows(p, blocks, weights_hash=wh, seconds_fetch=seconds_train, seconds_measure=seconds)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        self._active.clear()


PERTURB_ARM = variant_arm(PERTURBATION)


def perturbation_provenance(run: TwinRun, step: int, pythia: int, draw: int, metric, draw_seed: int) -> Provenance:
    """Draw ``draw`` of the perturbation null at ``step`` of ``run`` (:mod:`trajectory.arms.perturb`): stored as
    the arm ``twin:perturbation``, seed ``draw``; its commit names the trained run and the draws' seed."""
    base = run.provenance(step, pythia, metric)
    return replace(base, arm=PERTURB_ARM, seed=draw, commit=f"perturb:{run.digest}/{draw_seed}")
