"""What tracking costs a Trainer run: ``tracking_overhead`` = training time with the callback ÷ without.

The demo's architecture (``manifests/demo.toml``: GPT-NeoX, d = 128, 6 blocks, FFN 512, vocab 4,096) trained
by a ``transformers.Trainer`` on random ids for ``--steps`` updates, measured at the ``dense`` schedule on
``--eval-tokens`` evaluation tokens (the band excluded: ``random_init=0``; it is a one-off cost at the start).
Runs with and without the callback alternate (A/B, ``--pairs`` times) in one process, and the medians of
their wall times are compared, so a load that changes during the bench falls on both.

    OMP_NUM_THREADS=1 python benches/bench_track.py --steps 200 --pairs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def demo_config():
    from transformers import AutoConfig

    from trajectory import load_manifest

    cfg = dict(load_manifest(ROOT / "manifests" / "demo.toml").model_config)
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def one_run(config, steps: int, batch: int, seq: int, eval_ids, tracked: bool) -> float:
    from transformers import Trainer, TrainingArguments

    from trajectory.engine.models import fresh_model
    from trajectory.track import TrajectoryCallback

    ids = torch.randint(0, config.vocab_size, (steps * batch, seq), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": x, "labels": x} for x in ids]
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            tmp, max_steps=steps, per_device_train_batch_size=batch, report_to=[], use_cpu=True,
            save_strategy="no", disable_tqdm=True, logging_steps=max(1, steps // 10),
        )  # fmt: skip
        trainer = Trainer(model=fresh_model(config, 0, with_head=True), args=args, train_dataset=data)
        if tracked:
            TrajectoryCallback.attach(trainer, store=Path(tmp) / "store", eval=eval_ids, random_init=0)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--eval-tokens", type=int, default=16_384)
    p.add_argument("--pairs", type=int, default=3)
    a = p.parse_args(argv)
    config = demo_config()
    eval_ids = torch.randint(0, config.vocab_size, (a.eval_tokens // a.seq, a.seq), generator=torch.Generator())
    times = {False: [], True: []}
    for _ in range(a.pairs):
        for tracked in (False, True):
            times[tracked].append(one_run(config, a.steps, a.batch, a.seq, eval_ids, tracked))
    plain, tracked = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"steps={a.steps} batch={a.batch}x{a.seq} eval_tokens={a.eval_tokens} pairs={a.pairs} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"without: {plain:.2f} s  with: {tracked:.2f} s  (medians; each {times})")
    print(f"tracking_overhead {tracked / plain:.3f}")


if __name__ == "__main__":
    main()
