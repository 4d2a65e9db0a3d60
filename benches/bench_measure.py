"""Benchmark: measuring every block must cost little more than one forward pass (issue 6).

On a pythia-160m-shaped GPT-NeoX (random init, built from its config, never
downloaded) and the same random token windows (seq_len 128, 4096-token batches):

* (a) the bare trunk forward pass (no LM head) and (b) the FFNProbe path of
  ``measure_blocks`` on all 12 blocks (the default config: float64 Gram and
  float32 cross products, held-out rows scored in the same pass) run in one
  process, alternating batch by batch, so both see the same machine load; (b)'s
  fits (made when the first held-out row arrives) and scores count in (b);
* (c) the straightforward method (what ``tests/test_engine.py``'s reference
  does): hooks keep every block's FFN (x, y) as float64, then
  ``numpy.linalg.lstsq`` on ``[X, 1]`` per block, in a fresh process;
* ``measure_blocks`` at 4k and at twice the tokens, each in a fresh process, for
  the memory ratio; then ``measure_blocks`` with the other precisions (``--also``,
  default float64 and float32), each in a fresh process, with their errors.

Peak memory is ``ru_maxrss`` (glibc's mmap threshold fixed, see ``WORKER_ENV``)
relative to its value once the model is built (the high-water mark is reset
there through ``/proc/self/clear_refs`` where Linux allows it), so it counts
activations and statistics, not the weights.  Times exclude model building.
The last line is machine-readable.

    python benches/bench_measure.py [--tokens 16384] [--also float64,float32] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trajectory.config import MetricConfig  # noqa: E402
from trajectory.data.tokens import EvalTokens  # noqa: E402
from trajectory.engine.adapters import adapter_for  # noqa: E402
from trajectory.engine.measure import measure_blocks, sinks_for, split_by_sequence  # noqa: E402
from trajectory.engine.probe import FFNProbe  # noqa: E402

SEQ_LEN = 128  # the manifests' window length
BATCH_TOKENS = 4096  # one batch already at 4k tokens, so 4k and 32k runs hold the same activations
# A fixed mmap threshold returns every freed activation buffer to the OS: with glibc's adaptive one, freed
# buffers stay in the heap and the peak creeps up with the number of batches (measured at 4k → 32k tokens:
# +420 → +560 MiB adaptive, +356 → +356 MiB fixed), which is fragmentation, not anything the method keeps.
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
PYTHIA_160M = dict(
    vocab_size=50304,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=2048,
)


def build_model(device: str):
    from transformers import GPTNeoXConfig, GPTNeoXModel

    torch.manual_seed(0)
    return GPTNeoXModel(GPTNeoXConfig(**PYTHIA_160M)).eval().to(device)


def eval_tokens(n_tokens: int) -> EvalTokens:
    ids = np.random.default_rng(0).integers(0, PYTHIA_160M["vocab_size"], size=(n_tokens // SEQ_LEN, SEQ_LEN))
    return EvalTokens(ids=ids, data_hash=f"random-{n_tokens}", source="random token ids")


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak() -> None:
    """Lower the high-water mark to the current RSS, so the model build's transient is not counted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux or not permitted: the baseline is then the peak so far


@torch.no_grad()
def run_forward(model, tokens: EvalTokens, device: str) -> list[float]:
    per_batch = BATCH_TOKENS // SEQ_LEN
    for start in range(0, tokens.ids.shape[0], per_batch):
        model(input_ids=torch.as_tensor(tokens.ids[start : start + per_batch], device=device), use_cache=False)
    return []


def run_measure(model, tokens: EvalTokens, device: str, precision: str = "mixed") -> list[float]:
    cfg = MetricConfig(compute_dtype=precision, batch_tokens=BATCH_TOKENS)
    return [row["r2_lin"] for row in measure_blocks(model, tokens, cfg, device=device)]


@torch.no_grad()
def run_naive(model, tokens: EvalTokens, device: str) -> list[float]:
    """Store every block's (x, y) in float64, then one lstsq per block on [X, 1]."""
    xs, ys, hooks = [[] for _ in model.layers], [[] for _ in model.layers], []
    for i, layer in enumerate(model.layers):
        hooks.append(layer.mlp.register_forward_pre_hook(lambda m, a, i=i: xs[i].append(a[0].double().cpu())))
        hooks.append(layer.mlp.register_forward_hook(lambda m, a, o, i=i: ys[i].append(o.double().cpu())))
    run_forward(model, tokens, device)
    for h in hooks:
        h.remove()
    is_test = np.repeat(split_by_sequence(tokens.ids.shape[0], MetricConfig()), SEQ_LEN)
    scores = []
    for i in range(len(model.layers)):
        x, y = torch.cat(xs[i]).flatten(0, 1).numpy(), torch.cat(ys[i]).flatten(0, 1).numpy()
        xs[i] = ys[i] = None
        scores.append(lstsq_r2(x[~is_test], y[~is_test], x[is_test], y[is_test]))
    return scores


def lstsq_r2(x_tr, y_tr, x_te, y_te, rcond=1e-6) -> float:
    """Held-out R² of numpy's lstsq fit of y on [x, 1] (each output dim centred on its held-out mean)."""
    beta = np.linalg.lstsq(np.hstack([x_tr, np.ones((len(x_tr), 1))]), y_tr, rcond=rcond)[0]
    resid = y_te - np.hstack([x_te, np.ones((len(x_te), 1))]) @ beta
    return float(1.0 - (resid**2).sum() / ((y_te - y_te.mean(0)) ** 2).sum())


def interleaved(model, tokens: EvalTokens, device: str) -> dict:
    """(a) and (b) batch by batch, alternating which goes first: both see the same load.

    (b) is the FFNProbe path of ``measure_blocks`` (same sinks, split and batches,
    the train windows first), timed per batch (the fits happen inside the first
    held-out batch), plus the scores at the end.
    (b)'s peak counts from before its statistics are allocated; (a)'s is the
    rise during the first forward batch, after they are; the forward's
    activations are the same in both.
    """
    cfg = MetricConfig(batch_tokens=BATCH_TOKENS)
    is_test = split_by_sequence(tokens.ids.shape[0], cfg)
    order, per = np.argsort(is_test, kind="stable"), BATCH_TOKENS // SEQ_LEN
    base, t_fwd, t_meas, peak_fwd = maxrss_mib(), [], [], None
    probe = FFNProbe(model, adapter_for(model.config.model_type), sinks_for(cfg, 2))  # counted in (b)'s peak
    base_fwd = maxrss_mib()
    for k, start in enumerate(range(0, len(order), per)):
        sel = order[start : start + per]
        sub = EvalTokens(ids=tokens.ids[sel], data_hash="", source="")
        steps = [
            (t_fwd, lambda sub=sub: run_forward(model, sub, device)),
            (t_meas, lambda sel=sel: probe.run(tokens.ids[sel], is_test[sel], per, device=device)),
        ]
        for times, step in steps if k % 2 == 0 else steps[::-1]:
            times.append(timed(step, device))
            if peak_fwd is None:
                peak_fwd = maxrss_mib() - base_fwd
    start = time.perf_counter()
    r2 = [sink.finalize(cfg.rcond)["r2_lin"] for sink in probe.accumulators["ffn"]]
    t_fit = time.perf_counter() - start
    return {
        "forward": t_fwd,
        "measure": t_meas,
        "fit": t_fit,
        "peak_forward": peak_fwd,
        "peak_measure": maxrss_mib() - base,
        "r2": r2,
    }


def timed(step, device: str) -> float:
    start = time.perf_counter()
    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def worker(method: str, n_tokens: int, device: str) -> None:
    """Run one method once in this (fresh) process; print its times, peak memory and R² as JSON."""
    model, tokens = build_model(device), eval_tokens(n_tokens)
    run_forward(model, EvalTokens(ids=tokens.ids[:1], data_hash="", source=""), device)  # one-time kernel set-up
    gc.collect()
    reset_peak()
    base = maxrss_mib()
    if method == "interleaved":
        print(json.dumps(interleaved(model, tokens, device)))
        return
    runner = {
        "naive": run_naive,
        "measure": run_measure,
        "float64": lambda *a: run_measure(*a, "float64"),
        "float32": lambda *a: run_measure(*a, "float32"),
    }[method]
    result: list[list[float]] = []
    seconds = timed(lambda: result.append(runner(model, tokens, device)), device)
    print(json.dumps({"seconds": seconds, "peak_mib": maxrss_mib() - base, "r2": result[0]}))


def spawn(method: str, n_tokens: int, device: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--tokens", str(n_tokens), "--device", device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **WORKER_ENV})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    shown = {
        k: (f"{v:.2f}" if isinstance(v, float) else f"{sum(v):.2f}" if k != "r2" else "")
        for k, v in result.items()
        if k != "r2"
    }
    print(f"  {method:<11} {n_tokens:>6} tokens  {shown}", flush=True)
    return result


def bench(n_tokens: int, device: str, also: list[str]) -> None:
    print(
        f"device={device} threads={torch.get_num_threads()} tokens={n_tokens} seq_len={SEQ_LEN} "
        f"batch_tokens={BATCH_TOKENS} load={os.getloadavg()[0]:.2f}",
        flush=True,
    )
    runs = {
        "interleaved": spawn("interleaved", n_tokens, device),
        "naive": spawn("naive", n_tokens, device),
        "4k": spawn("measure", 4096, device),
        "32k": spawn("measure", 2 * n_tokens, device),
    }
    for precision in also:
        runs[precision] = spawn(precision, n_tokens, device)
    report(runs, also)


def report(runs: dict, also: list[str]) -> None:
    inter, naive, small, large = (runs[k] for k in ("interleaved", "naive", "4k", "32k"))
    fwd = sum(inter["forward"])
    meas = sum(inter["measure"]) + inter["fit"]
    ratios = [m / f for m, f in zip(inter["measure"], inter["forward"])]
    print(f"(a) forward   {fwd:8.2f} s                          peak +{inter['peak_forward']:.0f} MiB")
    print(
        f"(b) measure   {meas:8.2f} s (final scores {inter['fit']:.2f} s; per-batch ratio median "
        f"{statistics.median(ratios):.3f})  peak +{inter['peak_measure']:.0f} MiB "
        f"(4k: +{small['peak_mib']:.0f}, 32k: +{large['peak_mib']:.0f})"
    )
    print(f"(c) naive     {naive['seconds']:8.2f} s                          peak +{naive['peak_mib']:.0f} MiB")
    diff = max(abs(a - b) for a, b in zip(inter["r2"], naive["r2"]))
    for precision in also:
        run = runs[precision]
        err = max(abs(a - b) for a, b in zip(run["r2"], naive["r2"]))
        print(
            f"(b') {precision} products: {run['seconds']:.2f} s ({run['seconds'] / fwd:.3f} x forward, separate "
            f"run) peak +{run['peak_mib']:.0f} MiB, max |ΔR²| vs naive {err:.2e}"
        )
    print(
        f"measure_over_forward={meas / fwd:.3f} naive_over_measure={naive['seconds'] / meas:.2f} "
        f"naive_mem_over_measure={naive['peak_mib'] / inter['peak_measure']:.2f} "
        f"measure_mem_32k_over_4k={large['peak_mib'] / small['peak_mib']:.3f} max_abs_r2_diff={diff:.2e}"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument(
        "--also",
        default="float64,float32",
        help="other precisions to time in separate runs, with their errors ('' for none)",
    )
    parser.add_argument("--device", help="default: cpu, then cuda when available")
    parser.add_argument(
        "--worker", choices=("interleaved", "measure", "float64", "float32", "naive"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.tokens, args.device)
    else:
        for device in [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
            bench(args.tokens, device, [p for p in args.also.split(",") if p])


if __name__ == "__main__":
    main()
