"""Figures a reader can check (issue 22, point 7): each seed its own style and legend entry, a persistent-exit
line that names its seed, a mean that says it is one, no line across unmeasured steps, an x label that names
the axis drawn.  The figures' matplotlib artists are inspected before they are saved."""

from __future__ import annotations

import math

import numpy as np
import pytest
from synthetic import METRIC_CONFIG, OFFSETS, write_unit

from trajectory.manifest import load_manifest
from trajectory.plots import band, companions, trajectories
from trajectory.plots.context import context_from
from trajectory.store import Store

STEPS = [0, 1, 2, 4, 8, 16, 24, 32, 40]  # the dense rule below: doubling to 8, then every 8 to 40
COMPANION_AT = (0, 16, 40)


def _value(seed: int, step: int) -> float:
    """Seed 0 rises out of the band at step 4 and stays; seed 1 at step 16: both persistent exits hold."""
    return 0.5 + (0.3 if step >= (4 if seed == 0 else 16) else 0.0)


@pytest.fixture
def drawn_from(tmp_path, monkeypatch):
    """(frame, ctx, figures): a two-seed twin on a dense schedule, and every figure the plots build, by name."""
    store = Store(tmp_path / "store")
    for seed, off in enumerate(OFFSETS):
        write_unit(store, "random-init", seed, 0, [0.5 + off], metric_core=METRIC_CONFIG, effective_rank=3)
    for seed in (0, 1):
        for step in STEPS:
            plain = {"metric_core": METRIC_CONFIG}  # as a real store: a unit without companions has config == core
            extra = {"effective_rank": 10 + step, "metric_core": "core"} if step in COMPANION_AT else plain
            write_unit(store, "twin", seed, step, [_value(seed, step)], pythia_step=step, **extra)
    (tmp_path / "m.toml").write_text(
        '[experiment]\nname = "synth"\narms = ["random-init", "twin"]\n[model]\nrepo = "EleutherAI/pythia-160m"\n'
        '[data]\ndataset = "Salesforce/wikitext:wikitext-103-raw-v1/validation-00000-of-00001.parquet"\n'
        '[schedule]\nrule = "dense"\nlog_until = 8\npoints = 4\nlast = 40\n'
        f'[sweep]\nstore = "{tmp_path / "store"}"\n[twin]\nsteps = 40\nseeds = [0, 1]\n',
        encoding="utf-8",
    )
    manifest = load_manifest(tmp_path / "m.toml")
    frame = store.read()
    figures = {}
    for module in (band, companions, trajectories):
        monkeypatch.setattr(module, "save", lambda fig, out, name: figures.setdefault(name, fig) and ())
    return frame, context_from(manifest, frame), figures


def _lines(ax, prefix: str):
    return [line for line in ax.get_lines() if line.get_label().startswith(prefix)]


def test_small_multiples_tells_the_seeds_apart_and_names_each_exit(drawn_from, tmp_path):
    frame, ctx, figures = drawn_from
    band.small_multiples(frame, ctx, tmp_path, arm="twin")
    fig = figures["small_multiples"]
    ax = fig.axes[0]
    twins = _lines(ax, "twin")
    assert len(twins) == 2  # one line per seed
    assert {line.get_label() for line in twins} == {"twin (our run), seed 0", "twin (our run), seed 1"}
    assert twins[0].get_linestyle() != twins[1].get_linestyle() or twins[0].get_marker() != twins[1].get_marker()
    exits = _lines(ax, "persistent exit")
    assert sorted(line.get_xdata()[0] for line in exits) == [4, 16]
    assert {("seed 0" in line.get_label()) for line in exits} == {True, False}  # each names its own seed
    assert all(("seed 0" in e.get_label()) == (e.get_xdata()[0] == 4) for e in exits)
    assert ctx.log_until and f"logarithmic to {ctx.log_until}, linear after" in ax.get_xlabel()
    assert ax.get_xscale() == "function"  # the axis drawn is the log-then-linear one the label names


def test_final_profile_draws_each_seed_with_its_own_legend_entry(drawn_from, tmp_path):
    frame, ctx, figures = drawn_from
    band.final_profile(frame, ctx, tmp_path)
    twins = _lines(figures["final_profile"].axes[0], "twin")
    assert sorted(line.get_label().split(",")[1].strip() for line in twins) == ["seed 0", "seed 1"]


def test_figures_that_average_the_seeds_say_so(drawn_from, tmp_path):
    frame, ctx, figures = drawn_from
    trajectories.lines_by_block(frame, ctx, tmp_path, arm="twin")
    trajectories.heatmap(frame, ctx, tmp_path, arm="twin")
    assert "mean of 2 seeds" in figures["lines_by_block"].axes[0].get_ylabel()
    colourbar = figures["heatmap"].axes[1]
    assert "mean of 2 seeds" in colourbar.get_ylabel()
    (line,) = [li for li in figures["lines_by_block"].axes[0].get_lines() if len(li.get_xdata()) > 1]
    at = dict(zip(line.get_xdata(), line.get_ydata(), strict=True))
    assert at[8] == pytest.approx((_value(0, 8) + _value(1, 8)) / 2)  # drawn: the mean, as the label says


def test_companions_join_no_points_across_unmeasured_steps(drawn_from, tmp_path):
    frame, ctx, figures = drawn_from
    companions.companion_metrics(frame, ctx, tmp_path, arm="twin")
    ax = figures["companions"].axes[0]
    (line,) = [li for li in ax.get_lines() if len(li.get_xdata()) > 1]
    x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    measured = [int(s) for s, v in zip(x, y, strict=True) if math.isfinite(v)]
    assert measured == list(COMPANION_AT)
    for a, b in zip(measured, measured[1:], strict=False):  # something unmeasured lies between: a NaN breaks it
        assert np.isnan(y[(x > a) & (x < b)]).any()
    assert any(f"logarithmic to {ctx.log_until}" in a.get_xlabel() for a in figures["companions"].axes)
