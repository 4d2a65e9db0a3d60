"""Benchmark: tokens per second of a compressed model against its intact base, side by side in one run.

Two models in one process: the intact base and the same base with the plan's FFNs replaced
(:func:`trajectory.load_compressed`'s patching).  With ``--folder DIR`` they are a folder written by
``trajectory compress --out DIR`` and its ``base/``; without it, a model built from ``--shape`` (random init,
never downloaded; the demo's pythia-14m shape by default) with ``--plan`` (default: every block's FFN replaced
by an affine map; the maps' values do not change the time, only their shapes do).  Forward passes with the LM
head, ``use_cache=False``, under ``torch.no_grad``, on ``--batch`` windows of ``--seq-len`` random tokens; the
two models alternate pass by pass (their order reversed every other repeat) so both see the same load on a
shared machine; each repeat times ``--passes`` passes of each after one warm-up pass, and the ratio is taken
within a repeat, then the median over ``--repeats``.  On ``cuda`` every pass is synchronised.  The last line
is machine-readable:

    intact_tokens_per_s=… compressed_tokens_per_s=… compressed_tokens_per_s_over_intact=…

    python benches/bench_compress.py [--folder DIR] [--shape demo|tiny] [--plan 0:affine,3:rank16,5:remove]
                                     [--batch 8] [--seq-len 128] [--passes 5] [--repeats 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trajectory.engine.ablation import Ablation, as_module  # noqa: E402
from trajectory.engine.adapters import adapter_for  # noqa: E402

SHAPES = {
    # the demo's pythia-14m-shaped GPT-NeoX (manifests/demo.toml)
    "demo": dict(vocab_size=4096, hidden_size=128, num_hidden_layers=6, num_attention_heads=4, intermediate_size=512),
    "tiny": dict(vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
}


def random_maps(ablation: Ablation, d: int, gen: torch.Generator) -> dict[str, np.ndarray]:
    """Tensors of ``ablation``'s shapes (their values do not change the time)."""
    if ablation.kind == "remove":
        return {}
    out = {"bias": torch.randn(d, generator=gen).numpy()}
    if ablation.kind == "affine":
        out["w"] = torch.randn(d, d, generator=gen).numpy() / d
    elif ablation.kind == "rank":
        out["u"] = torch.randn(d, ablation.rank, generator=gen).numpy() / d
        out["v"] = torch.randn(ablation.rank, d, generator=gen).numpy()
    return out


def built(shape: str, plan: str | None, device: str):
    """(intact, compressed, plan text, shape text): a random-init model of ``shape`` and a copy with ``plan``."""
    import copy

    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(**SHAPES[shape], max_position_embeddings=2048)
    intact = AutoModelForCausalLM.from_config(cfg).to(device).eval()
    compressed = copy.deepcopy(intact)
    adapter, d = adapter_for("gpt_neox"), cfg.hidden_size
    steps = plan or ",".join(f"{i}:affine" for i in range(cfg.num_hidden_layers))
    gen = torch.Generator().manual_seed(1)
    blocks = adapter.blocks(compressed)
    for item in steps.split(","):
        block, label = item.split(":")
        adapter.replace_ffn(blocks[int(block)], as_module(random_maps(Ablation.parse(label), d, gen), blocks[0].mlp))
    return intact, compressed, steps, describe(cfg)


def from_folder(folder: str, device: str):
    """(intact, compressed, plan text, shape text) of a compressed folder and its base."""
    import json

    from trajectory.compress.folder import load_compressed
    from trajectory.sources.loading import load_model

    record = json.loads((Path(folder) / "compression.json").read_text())
    compressed = load_compressed(folder, device)
    intact, _ = load_model(str(Path(folder) / "base"), device=device, with_head=True)
    steps = ",".join(f"{s['block']}:{s['ablation']}" for s in record["plan"])
    return intact, compressed, steps or "(nothing replaced)", describe(intact.config)


def describe(cfg) -> str:
    return (
        f"{cfg.model_type} d_model={cfg.hidden_size} blocks={cfg.num_hidden_layers} "
        f"d_ffn={cfg.intermediate_size} vocab={cfg.vocab_size}"
    )


@torch.no_grad()
def timed(model, ids: torch.Tensor, passes: int, device: str) -> float:
    """Seconds for ``passes`` forward passes (after the caller's warm-up)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(passes):
        model(input_ids=ids, use_cache=False)
    sync()
    return time.perf_counter() - start


def bench(intact, compressed, args) -> tuple[float, float, float]:
    """Medians over repeats: intact tokens/s, compressed tokens/s, and their per-repeat ratio."""
    gen = torch.Generator().manual_seed(2)
    vocab = intact.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq_len), generator=gen).to(args.device)
    tokens = args.batch * args.seq_len * args.passes
    rates = {"intact": [], "compressed": []}
    ratios = []
    for rep in range(args.repeats):
        order = [("intact", intact), ("compressed", compressed)][:: 1 if rep % 2 == 0 else -1]
        got = {}
        for name, model in order:
            timed(model, ids, 1, args.device)  # warm-up
            got[name] = tokens / timed(model, ids, args.passes, args.device)
            rates[name].append(got[name])
        ratios.append(got["compressed"] / got["intact"])
    return statistics.median(rates["intact"]), statistics.median(rates["compressed"]), statistics.median(ratios)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", help="a folder written by trajectory compress --out")
    p.add_argument("--shape", default="demo", choices=sorted(SHAPES))
    p.add_argument("--plan", help="block:ablation,… (default: every block affine)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.folder:
        intact, compressed, plan, shape = from_folder(args.folder, args.device)
    else:
        intact, compressed, plan, shape = built(args.shape, args.plan, args.device)
    print(
        f"model: {shape}; plan: {plan}; device={args.device} threads={torch.get_num_threads()} "
        f"batch={args.batch}×{args.seq_len} passes={args.passes} repeats={args.repeats}"
    )
    a, b, ratio = bench(intact, compressed, args)
    print(
        f"intact_tokens_per_s={a:.0f} compressed_tokens_per_s={b:.0f} compressed_tokens_per_s_over_intact={ratio:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
