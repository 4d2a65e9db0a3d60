"""Sweep throughput against the local Hub stand-in: what prefetch buys, and what a cached re-run costs.

Serves ``--revisions`` pythia-14m-shaped GPT-NeoX checkpoints (d=128, 6 blocks; ~5 MB of safetensors
each) from ``tests/hubserver.py`` with a bandwidth cap, then times ``run_sweep`` over them:

- ``prefetch=0``   download, then measure, one revision after the other
- ``prefetch=1``   the next revision downloads in a background thread while the current one is measured
- ``cached``       the same sweep again: every unit is a store hit (pin + tokenizer only)

    .venv/bin/python benches/bench_sweep.py [--revisions 8] [--bandwidth 5e6] [--tokens 16384]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

REPO = "EleutherAI/pythia-bench"
SHAPE = dict(hidden_size=128, num_hidden_layers=6, num_attention_heads=4, intermediate_size=512)


def build(root: Path, n: int) -> list[str]:
    from builders import stdlib_text, tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    revisions = [f"step{1000 * i}" for i in range(n)]
    for i, rev in enumerate(revisions):
        tiny_model("gpt_neox", seed=i, **SHAPE).save_pretrained(root / "ck" / rev)
        tok.save_pretrained(root / "ck" / rev)
    (root / "eval.txt").write_text(stdlib_text(), encoding="utf-8")
    return revisions


def timed_sweep(root: Path, revisions: list[str], store: str, tokens: int, prefetch: int, server) -> dict:
    import polars as pl

    from trajectory.config import DataSpec, MetricConfig
    from trajectory.manifest import quick_manifest
    from trajectory.scheduler import SweepOptions, run_sweep
    from trajectory.store import Store

    manifest = quick_manifest(
        REPO,
        revisions,
        DataSpec("text", str(root / "eval.txt"), "text", tokens, 128),
        MetricConfig(),
        str(root / store),
    )
    server.state.reset_counters()
    start = time.perf_counter()
    report = run_sweep(manifest, SweepOptions(prefetch=prefetch, progress=False))
    wall = time.perf_counter() - start
    assert not report.failed, report.summary()
    units = (
        Store(root / store)
        .read()
        .group_by("key")
        .agg(pl.col("seconds_fetch").first(), pl.col("seconds_measure").first())
    )
    return {
        "wall": wall,
        "done": report.count("done"),
        "cached": report.count("cached"),
        "mb": server.state.bytes_sent / 1e6,
        "fetch": units["seconds_fetch"].median(),
        "measure": units["seconds_measure"].median(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=8)
    parser.add_argument("--bandwidth", type=float, default=5e6, help="bytes/s the server sends (default 5 MB/s)")
    parser.add_argument("--tokens", type=int, default=16_384)
    args = parser.parse_args(argv)
    import pytest
    from hubserver import HubServer, HubState, point_client_at, serve_checkpoints

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        root = Path(tmp)
        revisions = build(root, args.revisions)
        state = HubState(bandwidth=args.bandwidth)
        serve_checkpoints(state, REPO, root / "ck")
        with HubServer(state) as server:
            point_client_at(mp, server.endpoint, root / "cache")
            rows = [
                ("prefetch=0", timed_sweep(root, revisions, "s0", args.tokens, 0, server)),
                ("prefetch=1", timed_sweep(root, revisions, "s1", args.tokens, 1, server)),
                ("cached", timed_sweep(root, revisions, "s1", args.tokens, 1, server)),
            ]
    print(f"{args.revisions} revisions, {args.tokens} tokens, server capped at {args.bandwidth / 1e6:.1f} MB/s")
    print(f"{'run':<12} {'wall s':>8} {'s/rev':>7} {'measured':>9} {'cached':>7} {'MB served':>10}")
    for name, r in rows:
        print(
            f"{name:<12} {r['wall']:>8.2f} {r['wall'] / args.revisions:>7.3f} {r['done']:>9} {r['cached']:>7} "
            f"{r['mb']:>10.1f}"
        )
    fetch, measure = rows[0][1]["fetch"], rows[0][1]["measure"]
    bound = max(fetch, measure)
    print(f"per revision, without prefetch: download {fetch:.2f} s, measure {measure:.2f} s")
    print(
        f"prefetch_wall_per_rev_over_max_download_measure={rows[1][1]['wall'] / args.revisions / bound:.3f} "
        f"cached_wall_per_rev={rows[2][1]['wall'] / args.revisions:.3f}"
    )


if __name__ == "__main__":
    main()
