"""The random-init twin: train the manifest's architecture ourselves and measure it at every scheduled step.

Optimiser (Pythia's shape): AdamW with betas (β1, β2) = (0.9, 0.95), eps 1e-8,
decoupled weight decay 0.1 on weight matrices and embeddings (not on biases or
LayerNorm parameters, as GPT-NeoX does), the global gradient norm clipped to
1.0.  Learning rate at update ``t`` of ``T`` (0-based), with ``w = max(1,
round(warmup_frac · T))`` warm-up updates and floor ``m = min_lr_frac · lr``:

    lr_t = lr · (t + 1) / w                                   for t < w
    lr_t = m + (lr − m) · ½ (1 + cos(π (t − w) / max(1, T − w)))  afterwards

The model is drawn with the family's real init (:func:`trajectory.baselines.fresh_model`)
from ``[twin] seed``, so twin step 0 is random-init seed ``seed``.

Schedule (:func:`twin_schedule`): a manifest step ``s`` of a schedule ending at
``L`` maps to twin step ``round(s · T / L)`` (the same fraction of training);
the schedule's early power-of-two steps below ``T`` are kept as twin steps
too, because the first updates change a model most.  Each row's
``pythia_step`` is the manifest step at the same fraction, ``round(t · L / T)``,
and ``tokens_seen = t · batch_tokens``.

At each scheduled step R²_lin of every block is measured in the loop on the
manifest's evaluation tokens (float32 weights, no autocast), written to the
store as one unit, and the training state (weights, optimiser, losses) is
saved atomically, so a run resumes from its last measured step.  With
``save_checkpoints`` each measured step is also saved as
``<store>/twin/<run>/checkpoints/step<t>/`` (a model folder with tokenizer),
which :mod:`trajectory.loading` opens with ``revision="step<t>"``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .baselines import architecture, config_hash, fresh_model, manifest_tokenizer, model_name, weights_hash
from .errors import TrajectoryError
from .measure import measure_blocks
from .store import Store, UnitOutcome, unit_key
from .tokens import EvalTokens, eval_tokens
from .traindata import TrainTokens, train_tokens

ARM = "twin"
TWIN_VERSION = 1  # bumped when a change to the training loop could change a trained weight


def twin_schedule(steps, budget: int) -> list[tuple[int, int]]:
    """(twin step, Pythia-equivalent step) pairs, sorted; see the module docstring."""
    last = max(steps)
    if budget < 1 or last < 1:
        raise TrajectoryError(f"[twin] steps must be ≥ 1 and the schedule must reach past step 0, "
                              f"got steps={budget}, last scheduled step={last}")
    twin = {round(s * budget / last) for s in steps}
    twin |= {s for s in steps if 0 < s < budget and s & (s - 1) == 0}
    return [(t, round(t * last / budget)) for t in sorted(twin)]


def lr_at(t: int, spec) -> float:
    """Learning rate of update ``t`` (0-based): linear warm-up, then cosine to ``min_lr_frac · lr``."""
    w = max(1, round(spec.warmup_frac * spec.steps))
    if t < w:
        return spec.lr * (t + 1) / w
    floor = spec.min_lr_frac * spec.lr
    frac = (t - w) / max(1, spec.steps - w)
    return floor + (spec.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


def make_optimizer(model: torch.nn.Module, spec) -> torch.optim.AdamW:
    """AdamW, Pythia's shape: no decay on biases and LayerNorm parameters."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        (plain if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps)


@dataclass
class TwinRun:
    """Everything one twin run needs, resolved from a manifest."""

    manifest: object
    spec: object
    config: object
    tokenizer: object
    eval: EvalTokens
    train: TrainTokens
    digest: str
    folder: Path
    points: list[tuple[int, int]]

    @property
    def per_batch(self) -> int:
        return max(1, self.spec.batch_tokens // self.spec.seq_len)

    def key(self, step: int) -> str:
        return unit_key({"experiment": self.manifest.name, "arm": ARM, "model": model_name(self.manifest),
                         "seed": self.spec.seed, "revision": f"step{step}", "commit": f"twin:{self.digest}",
                         "data_hash": self.eval.data_hash, "metric_config": self.manifest.metric.digest()})


def _check_disjoint(manifest, spec) -> None:
    kind, _, arg = spec.train_data.partition(":")
    data = manifest.data
    if kind == "text" and data.kind == "text" and Path(arg).resolve() == Path(data.path).resolve():
        raise TrajectoryError(f"manifest {manifest.source.name}: [twin] train_data and [data] are the same file "
                              f"{arg}; the twin's evaluation tokens must be disjoint from its training tokens")


def plan(manifest, store: Store, device: str = "cpu") -> TwinRun:
    """Resolve a manifest's twin: architecture, tokens, run digest, folder and schedule."""
    spec = manifest.twin
    if spec is None:
        raise TrajectoryError(f"manifest {manifest.source.name}: arm 'twin' needs a [twin] table")
    _check_disjoint(manifest, spec)
    config = architecture(manifest)
    tokenizer = manifest_tokenizer(manifest)
    if len(tokenizer) > config.vocab_size:
        raise TrajectoryError(f"manifest {manifest.source.name}: tokenizer has {len(tokenizer)} tokens but "
                              f"vocab_size is {config.vocab_size}; raise [model.config] vocab_size")
    per_batch = max(1, spec.batch_tokens // spec.seq_len)
    train = train_tokens(spec.train_data, tokenizer, spec.steps * per_batch * spec.seq_len, spec.seq_len)
    evals = eval_tokens(manifest.data, tokenizer)
    fields = {k: v for k, v in asdict(spec).items() if k != "save_checkpoints"}
    precision = "bf16-autocast" if device.startswith("cuda") else "fp32"
    blob = json.dumps({"spec": fields, "config": config_hash(config), "train": train.data_hash,
                       "precision": precision, "version": TWIN_VERSION}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    folder = store.root / "twin" / digest
    return TwinRun(manifest, spec, config, tokenizer, evals, train, digest, folder,
                   twin_schedule(manifest.schedule.steps, spec.steps))


def data_seed(seed: int) -> int:
    """The data-order seed: a child of the twin's seed, independent of its init draw."""
    return int(np.random.SeedSequence([int(seed), 1]).generate_state(1)[0])


def train_step(run: TwinRun, model: torch.nn.Module, opt: torch.optim.Optimizer, t: int, device: str) -> float:
    """Update ``t`` (0-based): one batch, clipped AdamW step; returns the batch's mean next-token loss."""
    for group in opt.param_groups:
        group["lr"] = lr_at(t, run.spec)
    ids = torch.as_tensor(run.train.batch(t, run.per_batch, data_seed(run.spec.seed)), device=device)  # (b, seq)
    kind = device.split(":")[0]
    with torch.autocast(kind, dtype=torch.bfloat16, enabled=kind == "cuda"):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    if not torch.isfinite(loss):
        raise TrajectoryError(f"twin loss became {float(loss)} at step {t}; lower [twin] lr")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), run.spec.clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with open(fd, "wb") as fh:
            torch.save(obj, fh)
        Path(tmp).replace(path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def save_state(run: TwinRun, step: int, model, opt, losses: list) -> None:
    """The training state after ``step`` updates, and ``losses.tsv`` (step, loss, lr) beside it."""
    _atomic_save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(), "losses": losses},
                 run.folder / "state.pt")
    lines = ["step\tloss\tlr", *(f"{t}\t{loss:.6f}\t{lr:.3e}" for t, loss, lr in losses)]
    (run.folder / "losses.tsv").write_text("\n".join(lines) + "\n")


def save_checkpoint(run: TwinRun, step: int, model) -> Path:
    """``checkpoints/step<step>/``: a model folder with the tokenizer, written atomically."""
    final = run.folder / "checkpoints" / f"step{step}"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        model.save_pretrained(tmp)
        run.tokenizer.save_pretrained(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.replace(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _start(run: TwinRun, first_pending: int, device: str):
    """(model, optimiser, step, losses): resumed from the saved state when it is not past ``first_pending``."""
    model = fresh_model(run.config, run.spec.seed, with_head=True).to(device).train()
    opt = make_optimizer(model, run.spec)
    path = run.folder / "state.pt"
    if path.is_file():
        state = torch.load(path, map_location=device, weights_only=True)
        if state["step"] <= first_pending:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            return model, opt, int(state["step"]), [tuple(x) for x in state["losses"]]
    return model, opt, 0, []


def measure_step(run: TwinRun, model, step: int, pythia_step: int, device: str, seconds_train: float) -> list[dict]:
    """The rows of twin step ``step``: R²_lin of every block, measured in the loop."""
    t0 = time.perf_counter()
    blocks = measure_blocks(model, run.eval, run.manifest.metric, device=device)
    model.train()  # the probe switched the trunk to eval mode
    base = {"experiment": run.manifest.name, "arm": ARM, "model": model_name(run.manifest), "seed": run.spec.seed,
            "revision": f"step{step}", "step": step, "pythia_step": pythia_step,
            "tokens_seen": step * run.per_batch * run.spec.seq_len, "commit": f"twin:{run.digest}",
            "weights_hash": weights_hash(model), "data_hash": run.eval.data_hash,
            "metric_config": run.manifest.metric.digest(), "seconds_fetch": seconds_train,
            "seconds_measure": time.perf_counter() - t0}
    return [{**base, **b} for b in blocks]


def _passed(run, store, model, opt, t, pythia, device, losses, since, pending) -> UnitOutcome | None:
    """At a scheduled step: measure it if the store lacks it, then save the state (and checkpoint)."""
    outcome = None
    if t in pending:
        store.write_unit(run.key(t), measure_step(run, model, t, pythia, device, time.perf_counter() - since))
        outcome = UnitOutcome(run.key(t), f"twin step {t}", "done")
    save_state(run, t, model, opt, losses)
    if run.spec.save_checkpoints:
        save_checkpoint(run, t, model)
    return outcome


def run_twin(manifest, store: Store, device: str = "cpu", progress: bool = True) -> list[UnitOutcome]:
    """Train (or resume) the manifest's twin and measure every scheduled step the store lacks."""
    from tqdm.auto import tqdm

    run = plan(manifest, store, device)
    pythia = dict(run.points)
    pending = sorted(t for t in pythia if not store.has(run.key(t)))
    outcomes = {t: UnitOutcome(run.key(t), f"twin step {t}", "cached") for t in pythia if t not in pending}
    if not pending:
        return [outcomes[t] for t in sorted(outcomes)]
    model, opt, t, losses = _start(run, pending[0], device)
    bar = tqdm(total=pending[-1], initial=t, desc=f"twin {manifest.name}", unit="step", disable=not progress)
    since = time.perf_counter()
    try:
        while True:
            if t in pythia:
                done = _passed(run, store, model, opt, t, pythia[t], device, losses, since, pending)
                outcomes.update({t: done} if done else {})
                since = time.perf_counter()  # seconds_fetch: training time since the previous point
            if t >= pending[-1]:
                break
            losses.append((t + 1, train_step(run, model, opt, t, device), lr_at(t, run.spec)))
            t += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1][1]:.3f}")
    except (TrajectoryError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0]
        for s in (s for s in pending if s not in outcomes):
            store.record_failure(run.key(s), {"arm": ARM, "step": s}, reason)
            outcomes[s] = UnitOutcome(run.key(s), f"twin step {s}", "failed", reason)
    finally:
        bar.close()
    return [outcomes[s] for s in sorted(outcomes)]
