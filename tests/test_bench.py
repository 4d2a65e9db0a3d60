"""The measurement benchmark (benches/bench_measure.py): its peer is the paper's fit, its last line the medians."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benches" / "bench_measure.py"
KEYS = ["measure_over_forward", "peer_over_measure", "peer_mem_over_measure", "measure_mem_131k_over_16k",
        "max_abs_r2_diff"]  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_measure", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_peer_fit_is_ordinary_least_squares_on_x_and_a_column_of_ones(bench):
    """Against numpy's lstsq on a planted affine map with noise: same held-out R², both conventions."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    y = (x @ rng.normal(size=(8, 5)) + 3.0 + 0.5 * rng.normal(size=(600, 5))).astype(np.float32)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    a = np.hstack([xd, np.ones((600, 1))])
    beta = np.linalg.lstsq(a[:480], yd[:480], rcond=None)[0]
    resid = yd[480:] - a[480:] @ beta
    want_dim = 1 - (resid**2).sum() / ((yd[480:] - yd[480:].mean(0)) ** 2).sum()
    want_global = 1 - (resid**2).sum() / ((yd[480:] - yd[480:].mean()) ** 2).sum()
    got = bench.peer_fit_r2(*(torch.from_numpy(v) for v in (x[:480], y[:480], x[480:], y[480:])))
    assert got["r2_lin"] == pytest.approx(want_dim, abs=1e-12)
    assert got["r2_lin_global"] == pytest.approx(want_global, abs=1e-12)
    assert want_global > want_dim  # the intercept 3.0 inflates the global convention's denominator


def test_the_peer_sees_the_rows_measure_sees_and_differs_by_its_cutoff_only(bench):
    """On a tiny model: with numpy's cutoff the peer's fit equals ``measure_blocks`` (same train and held-out
    rows); without it (the paper's default driver) it also fits the LayerNorm's near-null direction."""
    model, tokens = bench.build_model("quick", "cpu"), bench.eval_tokens(1024, 1024)
    measured = bench.run_measure(model, tokens, "cpu")
    exact = bench.run_peer(model, tokens, "cpu", cutoff=1e-6)
    peer = bench.run_peer(model, tokens, "cpu")
    assert bench.r2_diff(exact, measured) < 1e-7
    assert 0 < bench.r2_diff(peer, measured) < 1e-3


def test_the_last_line_holds_medians_of_ratios_taken_within_each_repeat(bench):
    def run(seconds, peak, r2=0.9):
        return {"seconds": seconds, "peak_mib": peak, "r2": [{"r2_lin": r2, "r2_lin_global": r2}]}

    # peer ÷ measure per repeat: 10, 1, 2 (median 2), while median(peer) ÷ median(measure) would be 6 ÷ 2 = 3
    small = [
        {"interleaved": {"forward": 1.0, "measure": 1.5}, "measure": run(1, 100), "peer": run(10, 1000, 0.9 + 1e-6)},
        {"interleaved": {"forward": 2.0, "measure": 2.0}, "measure": run(2, 110), "peer": run(2, 990)},
        {"interleaved": {"forward": 1.0, "measure": 1.2}, "measure": run(3, 120), "peer": run(6, 1200)},
    ]
    big = [{"measure": run(20, 132), "peer": run(40, 8000, 0.9 - 3e-6)}]
    also = {"peer-cutoff": run(0, 0)}
    line = bench.report(small, big, also, 16384, 131072).splitlines()[-1]
    values = dict(pair.split("=") for pair in line.split())
    assert list(values) == KEYS
    assert float(values["measure_over_forward"]) == pytest.approx(1.2)  # median of 1.5, 1.0, 1.2
    assert float(values["peer_over_measure"]) == pytest.approx(2.0)
    assert float(values["peer_mem_over_measure"]) == pytest.approx(10.0)  # median of 10, 9, 10 (not 1000 ÷ 110)
    assert float(values["measure_mem_131k_over_16k"]) == pytest.approx(1.2, abs=1e-3)  # 132 ÷ median 110
    assert float(values["max_abs_r2_diff"]) == pytest.approx(3e-6, rel=1e-2)


@pytest.mark.slow
def test_a_quick_run_ends_with_the_line_of_medians():
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--repeats", "1"], capture_output=True, text=True, check=True
    )
    last = out.stdout.strip().splitlines()[-1]
    assert [pair.split("=")[0] for pair in last.split()] == KEYS, out.stdout
