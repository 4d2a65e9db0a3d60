"""The compression benchmark (benches/bench_compress.py): both models run, the plan is applied, the line parses."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benches" / "bench_compress.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_compress", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plan_replaces_the_named_blocks_and_the_last_line_parses(bench, capsys, one_thread):
    intact, compressed, plan, shape = bench.built("tiny", "0:rank4,1:remove", "cpu")
    assert plan == "0:rank4,1:remove" and "d_model=32" in shape
    assert [type(b.mlp).__name__ for b in compressed.gpt_neox.layers] == ["FFNMap", "FFNMap"]
    assert [type(b.mlp).__name__ for b in intact.gpt_neox.layers] == ["GPTNeoXMLP", "GPTNeoXMLP"]
    assert bench.main(["--shape", "tiny", "--passes", "1", "--repeats", "2", "--batch", "2", "--seq-len", "16"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    values = dict(item.split("=") for item in last.split())
    assert set(values) == {"intact_tokens_per_s", "compressed_tokens_per_s", "compressed_tokens_per_s_over_intact"}
    assert float(values["compressed_tokens_per_s_over_intact"]) > 0
