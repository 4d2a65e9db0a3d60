"""Where a measurement's time goes: ``measure_blocks`` under the torch profiler, beside one forward pass.

The same model, tokens and configuration as ``bench_measure.py`` (pythia-160m shape, ``--quick`` a small one).
After one warm-up of each, it profiles one forward pass of the trunk and one ``measure_blocks`` call, and
prints, per call, the wall time, the device time and the ops that take most of it (``key_averages`` sorted by
device time on CUDA, CPU time on a CPU), and the count of host-device synchronisations' usual suspects
(``aten::item``, ``aten::_local_scalar_dense``, ``Memcpy DtoH``) — the summary ``benches/README.md`` keeps.
The last line is machine-readable:

    profile_measure_wall_s=… profile_forward_wall_s=… profile_syncs=…

    python benches/profile_measure.py [--quick] [--device cpu|cuda] [--tokens 16384] [--rows 15]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_measure import DEFAULTS, build_model, eval_tokens, run_forward, run_measure

SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "Memcpy DtoH")


def profiled(fn, device: str):
    """(wall seconds, profiler) of one call of ``fn``, synchronised on CUDA."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
    return wall, prof


def syncs(prof) -> int:
    """How many events of the usual host-synchronising ops the profile holds."""
    return sum(e.count for e in prof.key_averages() if any(s in e.key for s in SYNC_OPS))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small model: checks the script only")
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--tokens", type=int, help="evaluation tokens (default: bench_measure's)")
    parser.add_argument("--rows", type=int, default=15, help="ops listed per call (default 15)")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    shape = "quick" if args.quick else "pythia-160m"
    model = build_model(shape, device)
    tokens = eval_tokens(args.tokens or DEFAULTS[shape][0], model.config.vocab_size)
    run_forward(model, tokens, device)
    run_measure(model, tokens, device)
    key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    walls = {}
    for name, fn in (
        ("forward", lambda: run_forward(model, tokens, device)),
        ("measure", lambda: run_measure(model, tokens, device)),
    ):
        walls[name], prof = profiled(fn, device)
        print(f"== {name}: {walls[name]:.3f} s wall, {syncs(prof)} sync-op events, top ops by {key}:")
        print(prof.key_averages().table(sort_by=key, row_limit=args.rows))
        walls[name + "_syncs"] = syncs(prof)
    print(
        f"profile_measure_wall_s={walls['measure']:.4f} profile_forward_wall_s={walls['forward']:.4f} "
        f"profile_syncs={walls['measure_syncs']}"
    )


if __name__ == "__main__":
    main()
