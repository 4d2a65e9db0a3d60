"""Benchmark: the twin's training update, and what each GPU speed-up would buy, side by side in one process.

On a GPT-NeoX of the pythia-160m shape (``--quick``: a small shape that only checks the script), built from
its config with the family's real init (never downloaded), it times the twin's own update
(:func:`trajectory.arms.training.update`: bf16 autocast on CUDA, AdamW in Pythia's shape, clipping) on random
token rows of ``--rows`` × ``--seq-len`` tokens, the pythia-160m manifest's batch by default.

Variants (``--variants``), each a change the twin could adopt, are timed in turn with the baseline,
A B A B …, one round each, so a drifting machine moves both sides of a ratio alike:

* ``fused``: ``torch.optim.AdamW(fused=True)``;
* ``sdpa`` / ``eager``: the attention implementation transformers is asked for;
* ``tf32``: TF32 matrix products for the float32 parts (``torch.backends.cuda.matmul.allow_tf32``);
* ``compile``: ``torch.compile`` of the model.

FLOPs per update (the usual dense-transformer count, forward and backward, as in PaLM's appendix B):
``6 · N · T + 12 · L · d · s · T`` for ``T`` tokens, ``N`` parameters less the input embedding (a lookup),
``L`` layers, width ``d`` and window ``s``.  MFU is that over the update's time and the card's dense bf16
peak (``--peak-tflops``; known cards by name, else ``nan``).  The last line is machine-readable:

    twin_s_per_update=… twin_tflops=… twin_mfu=… [<variant>_over_baseline=…]

    python benches/bench_twin.py [--quick] [--device cpu|cuda] [--updates 10] [--rounds 3] [--variants fused,tf32]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benches"))

from bench_measure import SHAPES as MEASURE_SHAPES  # noqa: E402

from trajectory.arms.training import make_optimizer, update  # noqa: E402
from trajectory.config import TwinSpec  # noqa: E402
from trajectory.engine.models import fresh_model  # noqa: E402

#: bench_measure's model shapes, with the twin's batch: pythia-160m.toml's 16 rows of 2,049 tokens.
SHAPES = {
    "pythia-160m": {**MEASURE_SHAPES["pythia-160m"], "rows": 16, "seq_len": 2049},
    "quick": {**MEASURE_SHAPES["quick"], "rows": 4, "seq_len": 65},
}
#: Dense bf16 peak (TFLOP/s) by a substring of ``torch.cuda.get_device_name()``; H100/H200 SXM: 989.4.
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "4090": 165.2}
VARIANTS = ("fused", "sdpa", "eager", "tf32", "compile")


def peak_tflops(device: str, given: float | None) -> float:
    """The card's dense bf16 peak, from ``--peak-tflops`` or its name; ``nan`` on a CPU or an unknown card."""
    if given:
        return given
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in PEAK_TFLOPS.items() if k in name), math.nan)
    return math.nan


def flops_per_update(model: torch.nn.Module, tokens: int, seq_len: int) -> float:
    """``6·N·T + 12·L·d·s·T`` (see the module docstring); ``N`` excludes the input embedding."""
    cfg = model.config
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    return 6.0 * n * tokens + 12.0 * cfg.num_hidden_layers * cfg.hidden_size * seq_len * tokens


def build(shape: dict, variant: str, device: str):
    """Model and optimiser for one variant, the same init (seed 0) for every variant."""
    from transformers import GPTNeoXConfig

    arch = {k: v for k, v in shape.items() if k not in ("rows", "seq_len")}
    config = GPTNeoXConfig(**arch)
    if variant in ("sdpa", "eager"):
        config._attn_implementation = variant
    model = fresh_model(config, seed=0, with_head=True).to(device).train()
    spec = TwinSpec(steps=1000)
    opt = make_optimizer(model, spec)
    if variant == "fused":
        opt = torch.optim.AdamW(opt.param_groups, lr=spec.lr, betas=(spec.beta1, spec.beta2), fused=True)
    if variant == "compile":
        model = torch.compile(model)
    return model, opt, spec


@contextlib.contextmanager
def tf32(on: bool):
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def time_updates(model, opt, spec, ids: torch.Tensor, updates: int, device: str, warmup: int = 2) -> float:
    """Seconds per update over ``updates`` updates after ``warmup`` (synchronised on CUDA)."""

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        update(model, opt, ids, spec.lr, spec.clip, device)
    sync()
    start = time.perf_counter()
    for _ in range(updates):
        update(model, opt, ids, spec.lr, spec.clip, device)
    sync()
    return (time.perf_counter() - start) / updates


def run_variant(shape: dict, variant: str, ids: torch.Tensor, updates: int, device: str) -> float:
    model, opt, spec = build(shape, variant, device)
    with tf32(variant == "tf32"):
        return time_updates(model, opt, spec, ids, updates, device)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small shape that only checks the script")
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--updates", type=int, default=10, help="timed updates per round (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of baseline and variants (default 3)")
    parser.add_argument("--variants", default="", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: by name)")
    args = parser.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    bad = sorted(set(args.variants) - set(VARIANTS))
    if bad:
        parser.error(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    if args.updates < 1 or args.rounds < 1:
        parser.error("--updates and --rounds must be ≥ 1")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    shape = SHAPES["quick" if args.quick else "pythia-160m"]
    ids = torch.randint(0, shape["vocab_size"], (shape["rows"], shape["seq_len"]), device=args.device)
    times: dict[str, list[float]] = {v: [] for v in ["baseline", *args.variants]}
    for r in range(args.rounds):
        for variant in times:
            times[variant].append(run_variant(shape, variant, ids, args.updates, args.device))
            print(f"round {r + 1}/{args.rounds} {variant}: {times[variant][-1]:.4f} s/update", flush=True)
    model, _, _ = build(shape, "baseline", "cpu")
    flops = flops_per_update(model, ids.numel(), shape["seq_len"])
    s = statistics.median(times["baseline"])
    tflops = flops / s / 1e12
    mfu = tflops / peak_tflops(args.device, args.peak_tflops)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(
        f"device {name}, shape {'quick' if args.quick else 'pythia-160m'}, {ids.numel()} tokens/update, "
        f"{flops:.3e} FLOPs/update, medians of {args.rounds} rounds of {args.updates} updates"
    )
    ratios = [
        f"{v}_over_baseline={statistics.median(a / b for a, b in zip(times[v], times['baseline'])):.3f}"
        for v in args.variants
    ]
    print(" ".join([f"twin_s_per_update={s:.4f}", f"twin_tflops={tflops:.2f}", f"twin_mfu={mfu:.3f}", *ratios]))


if __name__ == "__main__":
    main()
