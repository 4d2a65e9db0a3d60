"""Does linearity predict replaceability: Spearman's ρ, its bootstrap interval, the figure and the report."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from synthetic import write_manifest

from trajectory.manifest import load_manifest
from trajectory.plots import context_from
from trajectory.verdicts.replaceability import association, bootstrap_interval, spearman


def test_spearman_is_the_closed_form_without_ties_and_the_pearson_of_average_ranks_with_them():
    gen = np.random.default_rng(0)
    x, y = gen.normal(size=30), gen.normal(size=30)
    rx, ry = np.argsort(np.argsort(x)) + 1, np.argsort(np.argsort(y)) + 1
    closed = 1 - 6 * float(((rx - ry) ** 2).sum()) / (30 * (30**2 - 1))
    assert spearman(x, y) == pytest.approx(closed, abs=1e-12)
    # ties: x's ranks are 1, 2.5, 2.5, 4 by hand
    assert spearman(np.array([1.0, 2, 2, 3]), np.array([1.0, 2, 3, 4])) == pytest.approx(
        np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1], abs=1e-12
    )
    assert math.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_the_interval_covers_a_planted_monotone_link_tightly_and_noise_widely():
    x = np.linspace(0.5, 1.0, 40)
    low, high = bootstrap_interval(x, np.exp(-5 * x))  # strictly decreasing: every resample has ρ = −1
    assert low == pytest.approx(-1.0) and high == pytest.approx(-1.0)
    gen = np.random.default_rng(1)
    low, high = bootstrap_interval(gen.normal(size=40), gen.normal(size=40))
    assert low < 0 < high and high - low > 0.3


def frame(n_blocks: int = 4, steps=(0, 10, 100)) -> pl.DataFrame:
    """Twin rows whose swap Δloss falls as R²_lin rises, two seeds; random-init draws at step 0."""
    rows = []
    for seed in (0, 1):
        for step in steps:
            for b in range(n_blocks):
                r2 = 0.6 + 0.05 * b + 0.001 * step + 0.001 * seed
                rows.append(dict(arm="twin", seed=seed, step=step, block=b, status="ok", r2_lin=r2,
                                 swap_dloss=0.5 - r2 / 2, remove_dloss=0.3))  # fmt: skip
    for seed in range(3):
        for b in range(n_blocks):
            rows.append(dict(arm="random-init", seed=seed, step=0, block=b, status="ok", r2_lin=0.9,
                             swap_dloss=0.001 * (seed - 1), remove_dloss=0.002 * seed))  # fmt: skip
    return pl.DataFrame(rows)


def test_the_association_reads_trained_points_as_seed_means():
    a = association(frame())
    assert a.n == 12 and a.rho == pytest.approx(-1.0)
    assert a.points.filter((pl.col("block") == 1) & (pl.col("step") == 10))["r2_lin"][0] == pytest.approx(0.6605)
    assert association(frame(), "remove_dloss").rho != association(frame(), "remove_dloss").rho  # constant: NaN
    assert association(frame().filter(pl.col("block") == 0).head(2)) is None


def test_the_figure_and_the_report_section(tmp_path):
    from builders import key_of

    from trajectory.plots.companions import companion_metrics
    from trajectory.plots.replaceability import replaceability
    from trajectory.report import sections
    from trajectory.store import Store

    store = Store(tmp_path / "store")
    for (arm, seed, step), g in frame().group_by("arm", "seed", "step"):
        prov = dict(experiment="m", arm=arm, model="EleutherAI/pythia-160m", seed=seed, revision=f"step{step}",
                    step=step, commit=f"c{seed}{step}", data_hash="d", metric_config="m")  # fmt: skip
        store.write_unit(key_of(prov), [dict(prov, **r) for r in g.drop("arm", "seed", "step").to_dicts()])
    f = store.read()
    manifest = load_manifest(write_manifest(tmp_path / "m.toml", tmp_path / "store", arms=("twin", "random-init")))
    drawn = replaceability(f, context_from(manifest, f), tmp_path / "figs")
    assert drawn.paths and set(drawn.data) == {"swap_dloss", "remove_dloss"}
    assert drawn.data["swap_dloss"].height == 12
    comp = companion_metrics(f, context_from(manifest, f), tmp_path / "figs", arm="twin")
    assert set(comp.data) == {"swap_dloss", "remove_dloss", "random_init:swap_dloss", "random_init:remove_dloss"}
    crosses = comp.data["random_init:remove_dloss"].sort("seed", "block")
    assert crosses.height == 12 and crosses["remove_dloss"].to_list()[::4] == pytest.approx([0.0, 0.002, 0.004])
    empty = pl.DataFrame(schema={"data_hash": pl.Utf8, "metric_config": pl.Utf8, "rows": pl.UInt32})
    titles = [t for t, _ in sections(f, manifest, [], [], empty)]
    assert "Does linearity predict replaceability?" in titles
