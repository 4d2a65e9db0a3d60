"""Benchmark: R²_lin of every block against one forward pass, and against the paper's own method (the peer).

On a pythia-160m-shaped GPT-NeoX (random init, built from its config, never downloaded; ``--quick``: a small
shape that only checks the script) and random token windows (seq_len 128, 4096-token batches):

* **interleaved**: (a) the bare trunk forward pass (no LM head) and (b) the FFNProbe path of
  ``measure_blocks`` on every block (the default config: float64 Gram and float32 cross products, held-out
  rows scored in the same pass) in one process, alternating batch by batch so both see the same load; (b)'s
  fits (made when the first held-out row arrives) and scores count in (b).  Gives ``measure_over_forward``.
* **measure**: ``measure_blocks`` end to end, as every arm calls it.
* **peer**: the paper's code (polyweave ``research/run_depth_sweep.py`` with
  ``polyweave/distill/regression.py: fit_closed_form_linear``): one forward pass whose hooks keep every
  block's FFN (x, y) as float32 on the CPU, then per block ``torch.linalg.lstsq`` (default driver) on
  float64 ``[X, 1]``.  It is fitted on the same train rows as (b) and scored on the same held-out rows, with
  both R² conventions, so ``max_abs_r2_diff`` compares the fits, not the splits.

Each run is a fresh process.  At ``--tokens`` the three run ``--repeats`` times, their order reversed every
other repeat; at ``--big-tokens`` measure and peer run ``--big-repeats`` times (the peer's memory grows with
tokens, measure's does not).  Ratios are taken within a repeat, then the median over repeats, so one slow
moment on a shared machine moves one sample, not the line.  Peak memory is ``ru_maxrss`` (glibc's mmap
threshold fixed, see ``WORKER_ENV``) above its value once the model is built (the high-water mark is reset
there through ``/proc/self/clear_refs`` where Linux allows it): activations and statistics, not weights.
Times exclude model building.  The last line is machine-readable:

    measure_over_forward=… peer_over_measure=… peer_mem_over_measure=… measure_mem_131k_over_16k=… max_abs_r2_diff=…

(the memory ratio is named for the default sizes; it is big over small whatever they are).

One method alone, in a fresh process (its time and peak memory as JSON), e.g. the ``token_tail`` companion's
flat memory (docs/tokens.md):

    python benches/bench_measure.py --worker token_tail --shape quick --tokens 131072

    python benches/bench_measure.py [--tokens 16384] [--big-tokens 131072] [--repeats 3] [--big-repeats 1]
                                    [--also float64,float32] [--device cpu|cuda] [--quick] [--ratio-only]

``--ratio-only``: the interleaved runs alone, and a last line ``measure_over_forward=…`` (the device check's).
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
from trajectory.engine.measure import measure_blocks, sinks_for, split_by_document  # noqa: E402
from trajectory.engine.probe import FFNProbe  # noqa: E402

SEQ_LEN = 128  # the manifests' window length
BATCH_TOKENS = 4096  # one batch already at 4k tokens, so every size holds the same activations per batch
# A fixed mmap threshold returns every freed activation buffer to the OS: with glibc's adaptive one, freed
# buffers stay in the heap and the peak creeps up with the number of batches, which is fragmentation, not
# anything a method keeps (benches/README.md has the numbers).
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
SHAPES = {
    "pythia-160m": dict(
        vocab_size=50304,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=2048,
    ),
    "quick": dict(
        vocab_size=1024,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=256,
    ),
}
#: (tokens, big tokens, repeats) when not given.
DEFAULTS = {"pythia-160m": (16_384, 131_072, 3), "quick": (2_048, 16_384, 2)}


def build_model(shape: str, device: str):
    from transformers import GPTNeoXConfig, GPTNeoXModel

    torch.manual_seed(0)
    return GPTNeoXModel(GPTNeoXConfig(**SHAPES[shape])).eval().to(device)


def eval_tokens(n_tokens: int, vocab: int) -> EvalTokens:
    ids = np.random.default_rng(0).integers(0, vocab, size=(n_tokens // SEQ_LEN, SEQ_LEN))
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
def run_forward(model, tokens: EvalTokens, device: str) -> None:
    per_batch = BATCH_TOKENS // SEQ_LEN
    for start in range(0, tokens.ids.shape[0], per_batch):
        model(input_ids=torch.as_tensor(tokens.ids[start : start + per_batch], device=device), use_cache=False)


def run_measure(model, tokens: EvalTokens, device: str, precision: str = "mixed") -> list[dict]:
    cfg = MetricConfig(compute_dtype=precision, batch_tokens=BATCH_TOKENS)
    return [{k: row[k] for k in ("r2_lin", "r2_lin_global")} for row in measure_blocks(model, tokens, cfg, device)]


def run_token_tail(model, tokens: EvalTokens, device: str) -> list[dict]:
    """``measure_blocks`` with the ``token_tail`` companion (docs/tokens.md: its memory must stay flat)."""
    cfg = MetricConfig(batch_tokens=BATCH_TOKENS, companions=("token_tail",))
    return [{k: row[k] for k in ("r2_lin", "token_tail_top1")} for row in measure_blocks(model, tokens, cfg, device)]


@torch.no_grad()
def run_peer(model, tokens: EvalTokens, device: str, cutoff: float | None = None) -> list[dict]:
    """The paper's method: keep every block's FFN (x, y) as float32 on the CPU from one forward pass, then
    ``torch.linalg.lstsq`` (default driver) on float64 ``[X, 1]`` per block; (b)'s train and held-out rows.

    ``cutoff``: instead fit with the SVD driver and that ``rcond`` (numpy's cutoff, which ``measure`` applies
    to the Gram matrix's eigenvalues as rcond²): not the peer, a diagnostic of where the two differ."""
    n = len(model.layers)
    xs: list[list[torch.Tensor]] = [[] for _ in range(n)]
    ys: list[list[torch.Tensor]] = [[] for _ in range(n)]

    def keep(i: int):
        def hook(module, args, out):  # (batch, seq, d_model) → (batch·seq, d_model), float32, CPU
            xs[i].append(args[0].detach().reshape(-1, args[0].shape[-1]).float().cpu())
            ys[i].append(out.detach().reshape(-1, out.shape[-1]).float().cpu())

        return hook

    is_test = split_by_document(tokens, MetricConfig())
    # (b)'s train windows first: the train rows are then a prefix, split off by slicing as the peer does
    ordered = EvalTokens(ids=tokens.ids[np.argsort(is_test, kind="stable")], data_hash="", source="")
    n_train = int((~is_test).sum()) * SEQ_LEN
    handles = [layer.mlp.register_forward_hook(keep(i)) for i, layer in enumerate(model.layers)]
    try:
        run_forward(model, ordered, device)
    finally:
        for h in handles:
            h.remove()
    caps = [(torch.cat(xs[i]), torch.cat(ys[i])) for i in range(n)]  # every block kept until the last fit
    xs.clear()
    ys.clear()
    return [peer_fit_r2(x[:n_train], y[:n_train], x[n_train:], y[n_train:], cutoff) for x, y in caps]


def peer_fit_r2(x_tr, y_tr, x_te, y_te, cutoff: float | None = None) -> dict:
    """Held-out R² of ``torch.linalg.lstsq`` on float64 ``[X, 1]``: ``r2_lin`` (each output dim centred on
    its held-out mean, variance-weighted) and ``r2_lin_global`` (one mean over all elements, the paper's)."""
    ones = torch.ones(x_tr.shape[0], 1, dtype=torch.float64)
    how = {} if cutoff is None else {"driver": "gelsd", "rcond": cutoff}
    w = torch.linalg.lstsq(torch.cat([x_tr.double(), ones], dim=1), y_tr.double(), **how).solution  # (d+1, d)
    y_te = y_te.double()
    resid = y_te - torch.cat([x_te.double(), torch.ones(x_te.shape[0], 1, dtype=torch.float64)], dim=1) @ w
    ss_res = float((resid**2).sum())
    return {
        "r2_lin": 1.0 - ss_res / float(((y_te - y_te.mean(0)) ** 2).sum()),
        "r2_lin_global": 1.0 - ss_res / float(((y_te - y_te.mean()) ** 2).sum()),
    }


def interleaved(model, tokens: EvalTokens, device: str) -> dict:
    """(a) and (b) batch by batch, alternating which goes first: both see the same load.

    (b) is the FFNProbe path of ``measure_blocks`` (same sinks, split and batches, the train windows
    first), timed per batch (the fits happen inside the first held-out batch), plus the scores at the end.
    """
    cfg = MetricConfig(batch_tokens=BATCH_TOKENS)
    is_test = split_by_document(tokens, cfg)
    order, per = np.argsort(is_test, kind="stable"), BATCH_TOKENS // SEQ_LEN
    t_fwd, t_meas = [], []
    probe = FFNProbe(model, adapter_for(model.config.model_type), sinks_for(cfg, len(model.layers)))
    for k, start in enumerate(range(0, len(order), per)):
        sel = order[start : start + per]
        sub = EvalTokens(ids=tokens.ids[sel], data_hash="", source="")
        steps = [
            (t_fwd, lambda sub=sub: run_forward(model, sub, device)),
            (t_meas, lambda sel=sel: probe.run(tokens.ids[sel], is_test[sel], per, device=device)),
        ]
        for times, step in steps if k % 2 == 0 else steps[::-1]:
            times.append(timed(step, device))
    start = time.perf_counter()
    for sink in probe.accumulators["ffn"]:
        sink.finalize(cfg.rcond)
    return {"forward": sum(t_fwd), "measure": sum(t_meas) + time.perf_counter() - start}


def timed(step, device: str) -> float:
    start = time.perf_counter()
    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def worker(method: str, shape: str, n_tokens: int, device: str) -> None:
    """Run one method once in this (fresh) process; print its times, peak memory and R² as JSON."""
    model, tokens = build_model(shape, device), eval_tokens(n_tokens, SHAPES[shape]["vocab_size"])
    run_forward(model, EvalTokens(ids=tokens.ids[:1], data_hash="", source=""), device)  # one-time kernel set-up
    gc.collect()
    reset_peak()
    base = maxrss_mib()
    if method == "interleaved":
        print(json.dumps(interleaved(model, tokens, device)))
        return
    runner = {
        "peer": run_peer,
        "peer-cutoff": lambda *a: run_peer(*a, cutoff=MetricConfig().rcond),
        "measure": run_measure,
        "float64": lambda *a: run_measure(*a, "float64"),
        "float32": lambda *a: run_measure(*a, "float32"),
        "token_tail": run_token_tail,
    }[method]
    result: list[list[dict]] = []
    seconds = timed(lambda: result.append(runner(model, tokens, device)), device)
    print(json.dumps({"seconds": seconds, "peak_mib": maxrss_mib() - base, "r2": result[0]}))


def spawn(method: str, shape: str, n_tokens: int, device: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--shape", shape, "--tokens", str(n_tokens)]
    out = subprocess.run(
        [*cmd, "--device", device], check=True, capture_output=True, text=True, env={**os.environ, **WORKER_ENV}
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    shown = "  ".join(f"{k} {v:.2f}" for k, v in result.items() if k != "r2")
    print(f"  {method:<11} {n_tokens:>7} tokens  {shown}", flush=True)
    return result


def bench(args, device: str) -> None:
    print(
        f"device={device} shape={args.shape} threads={torch.get_num_threads()} tokens={args.tokens} "
        f"big_tokens={args.big_tokens} repeats={args.repeats}/{args.big_repeats} seq_len={SEQ_LEN} "
        f"batch_tokens={BATCH_TOKENS} load={os.getloadavg()[0]:.2f}",
        flush=True,
    )
    if args.ratio_only:
        runs = [spawn("interleaved", args.shape, args.tokens, device) for _ in range(args.repeats)]
        print(f"measure_over_forward={statistics.median(r['measure'] / r['forward'] for r in runs):.3f}")
        return
    small, big = [], []
    for r in range(args.repeats):
        methods = ["interleaved", "measure", "peer"]
        small.append({m: spawn(m, args.shape, args.tokens, device) for m in methods[:: 1 if r % 2 == 0 else -1]})
    for r in range(args.big_repeats):
        methods = ["measure", "peer"]
        big.append({m: spawn(m, args.shape, args.big_tokens, device) for m in methods[:: 1 if r % 2 == 0 else -1]})
    also = {p: spawn(p, args.shape, args.tokens, device) for p in ["peer-cutoff", *args.also]}
    print(report(small, big, also, args.tokens, args.big_tokens))


def r2_diff(a: list[dict], b: list[dict]) -> float:
    """max |ΔR²| over blocks and both conventions."""
    return max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True) for k in ("r2_lin", "r2_lin_global"))


def ratio(runs: list[dict], num: str, den: str, key: str) -> float:
    """The median over repeats of ``runs[i][num][key] / runs[i][den][key]``: a ratio within each repeat."""
    return statistics.median(r[num][key] / r[den][key] for r in runs)


def report(small: list[dict], big: list[dict], also: dict, tokens: int, big_tokens: int) -> str:
    """The summary lines; the last is the machine-readable line of medians."""
    med = statistics.median
    lines = [
        f"(a) forward, interleaved  {med(r['interleaved']['forward'] for r in small):8.2f} s (median of {len(small)})",
        f"(b) measure, interleaved  {med(r['interleaved']['measure'] for r in small):8.2f} s",
    ]
    for runs, n in ((small, tokens), (big, big_tokens)):
        for method in ("measure", "peer"):
            lines.append(
                f"{method:<8} {n:>7} tokens  {med(r[method]['seconds'] for r in runs):8.2f} s  "
                f"peak +{med(r[method]['peak_mib'] for r in runs):.0f} MiB"
            )
    cut = also.pop("peer-cutoff")
    vs_measure, vs_peer = (r2_diff(cut["r2"], small[0][m]["r2"]) for m in ("measure", "peer"))
    lines.append(
        f"the peer's fit with numpy's cutoff (gelsd, rcond {MetricConfig().rcond:g}): max |ΔR²| vs measure "
        f"{vs_measure:.2e}, vs the peer {vs_peer:.2e}"
    )
    for precision, run in also.items():
        lines.append(
            f"measure with {precision} products (separate run): {run['seconds']:.2f} s, peak +{run['peak_mib']:.0f} "
            f"MiB, max |ΔR²| vs measure {r2_diff(run['r2'], small[0]['measure']['r2']):.2e}"
        )
    lines.append(
        f"at {big_tokens} tokens: peer_over_measure={ratio(big, 'peer', 'measure', 'seconds'):.2f} "
        f"peer_mem_over_measure={ratio(big, 'peer', 'measure', 'peak_mib'):.2f}"
    )
    diff = max(r2_diff(r["measure"]["r2"], r["peer"]["r2"]) for r in small + big)
    mem = med(r["measure"]["peak_mib"] for r in big) / med(r["measure"]["peak_mib"] for r in small)
    over_forward = med(r["interleaved"]["measure"] / r["interleaved"]["forward"] for r in small)
    lines.append(
        f"measure_over_forward={over_forward:.3f} peer_over_measure={ratio(small, 'peer', 'measure', 'seconds'):.2f} "
        f"peer_mem_over_measure={ratio(small, 'peer', 'measure', 'peak_mib'):.2f} "
        f"measure_mem_131k_over_16k={mem:.3f} max_abs_r2_diff={diff:.2e}"
    )
    return "\n".join(lines)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, help="evaluation tokens of the repeated runs (default 16384)")
    parser.add_argument("--big-tokens", type=int, help="tokens of the memory-growth runs (default 131072)")
    parser.add_argument("--repeats", type=int, help="repeats at --tokens (default 3)")
    parser.add_argument("--big-repeats", type=int, default=1, help="repeats at --big-tokens (default 1)")
    parser.add_argument("--also", default="", help="other precisions to time once, e.g. float64,float32")
    parser.add_argument("--device", help="default: cpu, then cuda when available")
    parser.add_argument("--quick", action="store_true", help="a small model and sizes: checks the script only")
    parser.add_argument(
        "--ratio-only", action="store_true", help="only the interleaved runs: the measure_over_forward line"
    )
    parser.add_argument(
        "--worker",
        choices=("interleaved", "measure", "peer", "peer-cutoff", "float64", "float32", "token_tail"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="pythia-160m", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.shape = "quick"
    tokens, big, repeats = DEFAULTS[args.shape]
    args.tokens, args.big_tokens = args.tokens or tokens, args.big_tokens or big
    args.repeats = args.repeats or repeats
    args.also = [p for p in args.also.split(",") if p]
    return args


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        worker(args.worker, args.shape, args.tokens, args.device or "cpu")
        return
    for device in [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        bench(args, device)


if __name__ == "__main__":
    main()
