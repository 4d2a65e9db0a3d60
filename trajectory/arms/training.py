"""How the twin trains: Pythia's optimiser shape, its learning-rate schedule, one update, and its state.

Optimiser: AdamW with betas (β1, β2) = (0.9, 0.95), eps 1e-8, decoupled weight decay 0.1 on weight
matrices and embeddings (not on biases or LayerNorm parameters, as GPT-NeoX does), the global gradient
norm clipped to 1.0.  Learning rate at update ``t`` of ``T`` (0-based), with ``w = max(1, round(warmup_frac
· T))`` warm-up updates and floor ``m = min_lr_frac · lr``:

    lr_t = lr · (t + 1) / w                                       for t < w
    lr_t = m + (lr − m) · ½ (1 + cos(π (t − w) / max(1, T − w)))  afterwards

Randomness inside an update (dropout) comes from torch's global generator, seeded from the run's seed
(:func:`dropout_seed`) when the run starts and saved with the training state, so an interrupted run
resumes exactly as an uninterrupted one continues.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_bytes, atomic_dir, atomic_write
from ..config import TwinSpec
from ..errors import LoadError, TrajectoryError


def lr_at(t: int, spec: TwinSpec) -> float:
    """Learning rate of update ``t`` (0-based): linear warm-up, then cosine to ``min_lr_frac · lr``."""
    w = max(1, round(spec.warmup_frac * spec.steps))
    if t < w:
        return spec.lr * (t + 1) / w
    floor = spec.min_lr_frac * spec.lr
    frac = (t - w) / max(1, spec.steps - w)
    return floor + (spec.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


def make_optimizer(model: torch.nn.Module, spec: TwinSpec) -> torch.optim.AdamW:
    """AdamW, Pythia's shape: no decay on biases and LayerNorm parameters."""
    decay, plain = [], []
    for _, p in model.named_parameters():
        (plain if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps)


def child_seed(seed: int, purpose: int) -> int:
    """A seed for one purpose of a run (1: data order, 2: dropout), independent of the init draw."""
    return int(np.random.SeedSequence([int(seed), purpose]).generate_state(1)[0])


def data_seed(seed: int) -> int:
    """The data-order seed: a child of the twin's seed, independent of its init draw."""
    return child_seed(seed, 1)


def dropout_seed(seed: int) -> int:
    """The seed of torch's generator while the run trains (dropout masks)."""
    return child_seed(seed, 2)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the caller's count.

    A reduction split over ``k`` threads adds ``k`` partial sums in another order than one thread does, so
    float results (a trained weight's last bits) depend on ``k``; training under a fixed ``n`` makes them
    independent of how many threads the process was given (``--workers``, ``OMP_NUM_THREADS``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def update(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    ids: torch.Tensor,
    lr: float,
    clip: float,
    device: str,
    regulariser=None,
) -> float:
    """One clipped AdamW step on the batch ``ids`` (b, seq), minimising the next-token loss plus the
    ``regulariser``'s term (:mod:`trajectory.arms.regularisers`); returns the mean next-token loss (nats)."""
    from .regularisers import loss_with

    for group in opt.param_groups:
        group["lr"] = lr
    kind = device.split(":")[0]
    with torch.autocast(kind, dtype=torch.bfloat16, enabled=kind == "cuda"):
        total, loss = loss_with(model, ids, regulariser)
    if not torch.isfinite(total):
        raise TrajectoryError(f"twin loss became {float(total)}; lower [twin] lr")
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def rng_state(device: str) -> dict:
    """torch's generator states that an update draws from (CPU, and the CUDA device when training there)."""
    state = {"cpu": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: str) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"], device)


def save_state(folder: Path, step: int, model, opt, losses: list, device: str) -> None:
    """The training state after ``step`` updates (``state.pt``), and ``losses.tsv`` (step, loss, lr) beside it."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "losses": losses,
        "rng": rng_state(device),
    }
    atomic_write(folder / "state.pt", lambda tmp: torch.save(state, tmp))
    lines = ["step\tloss\tlr", *(f"{t}\t{loss:.6f}\t{lr:.3e}" for t, loss, lr in losses)]
    atomic_bytes(folder / "losses.tsv", "\n".join(lines) + "\n")


STATE_KEYS = ("step", "model", "optimizer", "losses")


def load_state(folder: Path, device: str) -> dict | None:
    """The saved training state, or None when there is none; a :class:`.LoadError` when it cannot be read
    (truncated, or not a state this module wrote)."""
    path = folder / "state.pt"
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch's zip reader and unpickler raise several types for a damaged file
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise LoadError(f"{path} is unreadable ({first})") from None
    if not (isinstance(state, dict) and all(k in state for k in STATE_KEYS)):
        raise LoadError(f"{path} is not a training state (it lacks {', '.join(STATE_KEYS)})")
    return state


def save_checkpoint(folder: Path, step: int, model, tokenizer) -> Path:
    """``checkpoints/step<step>/``: a model folder with the tokenizer, written atomically."""

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic_dir(folder / "checkpoints" / f"step{step}", build, replace=True)
