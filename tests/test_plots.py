"""Every figure is written (valid PNG and SVG of real size) and draws exactly the store's numbers."""

from __future__ import annotations

import struct
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from builders import key_of
from synthetic import (
    BAD,
    BASE,
    EXPECTED_PERSISTENT,
    FAILED_STEP,
    MISSING_STEP,
    MODEL,
    N_BLOCKS,
    OFFSETS,
    SHORT_STEPS,
    TWIN_BUDGET,
    build_store,
    hub_value,
    twin_value,
    write_manifest,
)

from trajectory.cli import main
from trajectory.manifest import load_manifest
from trajectory.plots import context_from, lines_by_block, plot_all, twin_vs_pythia
from trajectory.store import Store

NAMES = ["lines_by_block", "heatmap", "small_multiples", "final_profile", "twin_vs_pythia"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("plots")
    build_store(root / "store")
    manifest = load_manifest(write_manifest(root / "synth.toml", root / "store"))
    frame = Store(manifest.store_dir).read()
    ctx = context_from(manifest, frame)
    return manifest, frame, ctx, {d.name: d for d in plot_all(frame, ctx, root / "figs")}


def store_rows(frame: pl.DataFrame, arm: str) -> pl.DataFrame:
    """Independent of trajectory.verdict: the ok rows of one arm, as (block, step, value)."""
    return (
        frame.filter((pl.col("arm") == arm) & (pl.col("status") == "ok"))
        .select("block", "step", pl.col("r2_lin").alias("value"))
        .sort("block", "step")
    )


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("name", NAMES)
def test_every_figure_is_a_real_png_and_svg(setup, name):
    drawn = setup[3][name]
    png, svg = drawn.paths
    width, height = png_size(png)
    assert width >= 800 and height >= 500
    assert png.stat().st_size > 30_000
    text = svg.read_text()
    assert "<svg" in text[:2000] and svg.stat().st_size > 30_000
    assert "pythia-160m" in text and "wikitext-103-raw-v1/validation" in text  # the title names model and data


def test_redrawing_the_same_store_gives_the_same_bytes(setup, tmp_path):
    manifest, frame, ctx, drawn = setup
    again = {d.name: d for d in plot_all(frame, ctx, tmp_path)}
    for name in NAMES:
        for old, new in zip(drawn[name].paths, again[name].paths):
            assert old.read_bytes() == new.read_bytes(), new.name


def test_lines_draw_the_store(setup):
    _, frame, _, drawn = setup
    lines = drawn["lines_by_block"].data["lines"].select("block", "step", "value").sort("block", "step")
    assert lines.equals(store_rows(frame, "hub"))
    assert drawn["lines_by_block"].data["missing_steps"]["step"].to_list() == [MISSING_STEP, FAILED_STEP]


def test_heatmap_draws_the_store(setup):
    _, frame, _, drawn = setup
    cells = drawn["heatmap"].data["cells"].select("block", "step", "value").sort("block", "step")
    assert cells.equals(store_rows(frame, "hub"))


def test_small_multiples_draw_band_and_both_arms(setup):
    _, frame, _, drawn = setup
    data = drawn["small_multiples"].data
    assert data["band"]["init_mean"].to_list() == pytest.approx(BASE)
    twin = data["trained"].filter(pl.col("arm") == "twin").sort("block", "step")
    stored = frame.filter(pl.col("arm") == "twin").sort("block", "step")
    assert twin["x"].to_list() == stored["pythia_step"].to_list()  # the twin sits on its Pythia step
    assert twin["value"].to_list() == stored["r2_lin"].to_list()


def test_final_profile_draws_last_values_and_reference(setup):
    manifest, _, _, drawn = setup
    data = drawn["final_profile"].data
    hub = data["final"].filter(pl.col("arm") == "hub").sort("block")
    assert hub["final"].to_list() == pytest.approx([hub_value(b, SHORT_STEPS[-1]) for b in range(N_BLOCKS)])
    assert data["reference"]["value"].to_list() == pytest.approx(list(manifest.reference_profile))


def test_twin_vs_pythia_is_fraction_of_each_arms_training(setup):
    _, frame, _, drawn = setup
    lines = drawn["twin_vs_pythia"].data["lines"]
    twin = lines.filter(pl.col("arm") == "twin")
    hub = lines.filter(pl.col("arm") == "hub")
    assert (twin["fraction"] == twin["step"] / TWIN_BUDGET).all() and twin["fraction"].max() == 1.0
    assert (hub["fraction"] == hub["step"] / SHORT_STEPS[-1]).all()
    assert hub.select("block", "step", "value").sort("block", "step").equals(store_rows(frame, "hub"))


def test_metric_is_a_parameter(setup, tmp_path):
    _, frame, ctx, _ = setup
    halved = frame.with_columns(r2_lin_global=pl.col("r2_lin") / 2)
    drawn = lines_by_block(halved, replace(ctx, metric="r2_lin_global"), tmp_path, "hub")
    expected = store_rows(frame, "hub").with_columns(pl.col("value") / 2)
    assert drawn.data["lines"].select("block", "step", "value").sort("block", "step").equals(expected)


@pytest.mark.parametrize("missing", ["twin", "hub"])
def test_twin_vs_pythia_is_not_drawn_without_both_arms_and_says_why(tmp_path, missing):
    frame = build_store(tmp_path / "store", steps=[0, 1, 2, 64, 512], blocks=3).read()
    frame = frame.filter(pl.col("arm") != missing)
    manifest = load_manifest(write_manifest(tmp_path / "m.toml", tmp_path / "store"))
    drawn = twin_vs_pythia(frame, context_from(manifest, frame), tmp_path / "figs")
    assert drawn.paths == () and not (tmp_path / "figs").exists()
    lacking = "the twin" if missing == "twin" else "a checkpoint arm (hub or local)"
    assert (
        f"none of {lacking} (trained arms with usable rows: {'hub' if missing == 'twin' else 'twin'})" in drawn.skipped
    )


def test_twin_vs_pythia_puts_both_arms_on_a_tokens_axis_too(setup):
    _, frame, _, drawn = setup
    lines = drawn["twin_vs_pythia"].data["lines"]
    twin = lines.filter(pl.col("arm") == "twin").sort("block", "step")
    stored = frame.filter(pl.col("arm") == "twin").sort("block", "step")
    assert twin["tokens_seen"].to_list() == stored["tokens_seen"].to_list()  # the rows' own counts, not recomputed
    assert lines.filter(pl.col("arm") == "hub")["tokens_seen"].is_null().all()  # this synthetic hub stores none


def test_cli_plot_reads_only_the_store(tmp_path, capsys):
    build_store(tmp_path / "store", steps=[0, 1, 64, 128, 512], blocks=3)  # a partial sweep
    manifest = write_manifest(tmp_path / "m.toml", tmp_path / "store", reference=False)
    assert main(["plot", str(manifest), "--out", str(tmp_path / "out")]) == 0
    for name in NAMES:
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 10_000
        assert (tmp_path / "out" / f"{name}.svg").is_file()


def test_r2_lin_inf_is_drawn_on_request(tmp_path, capsys):
    from synthetic import INF_SHIFT

    build_store(tmp_path / "store", steps=[0, 1, 64, 128, 512], blocks=3, twin=False)
    manifest = write_manifest(tmp_path / "m.toml", tmp_path / "store", arms=("hub", "random-init"), reference=False)
    assert main(["plot", str(manifest), "--metric", "r2_lin_inf", "--out", str(tmp_path / "out")]) == 0
    frame = Store(tmp_path / "store").read()
    ctx = replace(context_from(load_manifest(manifest), frame), metric="r2_lin_inf")
    drawn = lines_by_block(frame, ctx, tmp_path / "again", "hub")
    expected = store_rows(frame, "hub").with_columns(pl.col("value") + INF_SHIFT)
    assert drawn.data["lines"].select("block", "step", "value").sort("block", "step")["value"].to_list() == (
        pytest.approx(expected["value"].to_list())
    )
    assert "extrapolated to unlimited train rows" in (tmp_path / "out" / "lines_by_block.svg").read_text()


def test_cli_plot_on_an_empty_store_is_one_line(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "m.toml", tmp_path / "empty")
    assert main(["plot", str(manifest)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no rows for experiment 'synth'" in err and "trajectory sweep" in err


def test_twin_persistent_exit_marker_stands_on_its_pythia_step(tmp_path):
    """Without a hub arm the verdict is the twin's; its panels' x axis is the Pythia-equivalent step."""
    from trajectory.plots.band import small_multiples

    frame = build_store(tmp_path / "store", steps=[0, 1, 2, 64, 512, 1000, 2000], blocks=3)
    frame = frame.read().filter(pl.col("arm") != "hub")
    manifest = load_manifest(write_manifest(tmp_path / "m.toml", tmp_path / "store", arms=("random-init", "twin")))
    drawn = small_multiples(frame, context_from(manifest, frame), tmp_path / "figs", arm="twin")
    table = drawn.data["table"]
    assert table["persistent_exit_pythia_step"].drop_nulls().len() > 0
    for row in table.iter_rows(named=True):
        held = [row["persistent_exit_pythia_step"]] if row["persistent_holds"] else []
        assert drawn.data["persistent_x"][row["block"]] == held


def test_the_persistent_marker_is_drawn_only_where_the_exit_holds_and_seeds_are_separate_lines(tmp_path):
    from synthetic import series_store

    from trajectory.plots.band import small_multiples

    not_yet = {0: 0.5, 64: 0.5, 1000: 0.5, 100_000: 0.5, 140_000: 0.9}  # out at the last point only
    store = series_store(tmp_path / "store", {0: not_yet, 1: {**not_yet, 100_000: 0.9}})
    frame = store.read()
    manifest = load_manifest(
        write_manifest(tmp_path / "m.toml", tmp_path / "store", arms=("hub", "random-init"), blocks=1)
    )
    drawn = small_multiples(frame, context_from(manifest, frame), tmp_path / "figs", arm="hub")
    assert drawn.data["persistent_x"][0] == []  # two points over 29% of training: neither seed's exit holds
    assert sorted(set(drawn.data["trained"]["seed"].to_list())) == [0, 1]
    svg = drawn.paths[1].read_text()
    assert "95% prediction band for one new draw" in svg and "seed 0" in svg and "seed 1" in svg


def test_companion_metrics_figure_draws_the_stored_values(tmp_path):
    from trajectory.plots.companions import companion_metrics
    from trajectory.store import Store

    store = Store(tmp_path / "store")
    for step in (0, 1, 64, 1000):
        prov = dict(
            experiment="synth",
            arm="hub",
            model=MODEL,
            seed=None,
            revision=f"step{step}",
            commit=f"c{step:040d}"[:40],
            data_hash="d",
            metric_config="m",
        )
        store.write_unit(
            key_of({**prov, "step": step}),  # the key of the rows' own provenance, or the store skips them
            [
                dict(
                    prov,
                    step=step,
                    block=b,
                    r2_lin=0.5,
                    status="ok",
                    linearity_score=0.9 - b / 10 + step / 1e4,
                    swap_dloss=0.01 * b,
                    r2_lin_cv=0.5,
                    r2_lin_cv_low=0.45,
                    r2_lin_cv_high=0.55,
                    effective_rank=b + 1,
                )
                for b in range(3)
            ],
        )
    frame = store.read()
    manifest = load_manifest(write_manifest(tmp_path / "m.toml", tmp_path / "store", arms=("hub",)))
    drawn = companion_metrics(frame, context_from(manifest, frame), tmp_path / "figs", arm="hub")
    assert set(drawn.data) == {"linearity_score", "swap_dloss", "r2_lin_cv", "effective_rank"}
    got = drawn.data["linearity_score"].select("block", "step", "value").sort("block", "step")
    want = frame.select("block", "step", pl.col("linearity_score").alias("value")).sort("block", "step")
    assert got.equals(want)
    assert all(p.stat().st_size > 10_000 for p in drawn.paths)
    assert (
        companion_metrics(
            frame.drop("linearity_score", "swap_dloss", "r2_lin_cv", "effective_rank"),
            context_from(manifest, frame),
            tmp_path / "none",
            arm="hub",
        )
        is None
    )


# -- what reached matplotlib: the artists' own data, against the synthetic design's closed form -------------
@pytest.fixture(scope="module")
def artists(setup, tmp_path_factory):
    """Every figure of ``plot_all`` as it was saved, artists intact (``plt.close`` is intercepted)."""
    import matplotlib.pyplot as plt

    manifest, frame, ctx, _ = setup
    kept, real = {}, plt.close
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt, "close", lambda fig=None: kept.setdefault(len(kept), fig))
        names = [d.name for d in plot_all(frame, ctx, tmp_path_factory.mktemp("artists"))]
    yield dict(zip(names, kept.values()))
    for fig in kept.values():
        real(fig)


def hub_expected(block: int) -> tuple[np.ndarray, np.ndarray]:
    """The hub line of ``block`` from the design: every scheduled step, NaN where no usable row exists."""
    steps = np.array(SHORT_STEPS, dtype=float)
    gap = {MISSING_STEP, FAILED_STEP} | ({BAD[0]} if block == BAD[1] else set())
    return steps, np.array([np.nan if s in gap else hub_value(block, s) for s in SHORT_STEPS])


def band_expected(block: int) -> tuple[float, float]:
    """The 95% prediction band for one new draw over the seeds of BASE[block] + OFFSETS: mean ± t · sd · √(1 + 1/S),
    sample sd (ddof 1), t(0.975, 4) = 2.7764451 from a printed table."""
    mean, sd, n = BASE[block] + np.mean(OFFSETS), np.std(OFFSETS, ddof=1), len(OFFSETS)
    half = 2.7764451 * sd * np.sqrt(1 + 1 / n)
    return mean - half, mean + half


def test_lines_by_block_draws_each_block_s_values_with_gaps_as_breaks(artists):
    ax = artists["lines_by_block"].axes[0]
    lines = [ln for ln in ax.lines if ln.get_marker() == "."]
    assert len(lines) == N_BLOCKS
    for block, line in enumerate(lines):
        x, y = hub_expected(block)
        np.testing.assert_array_equal(line.get_xdata(), x)
        np.testing.assert_allclose(np.asarray(line.get_ydata(), float), y, rtol=0, atol=1e-12)  # NaN == NaN
    (marks,) = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert list(marks.get_xdata()) == [MISSING_STEP, FAILED_STEP]


def test_heatmap_image_holds_the_store_values_and_masks_the_gaps(artists):
    image = artists["heatmap"].axes[0].images[0].get_array()
    assert image.shape == (N_BLOCKS, len(SHORT_STEPS))
    for block in range(N_BLOCKS):
        _, y = hub_expected(block)
        np.testing.assert_array_equal(np.ma.getmaskarray(image[block]), np.isnan(y))
        np.testing.assert_allclose(image[block].compressed(), y[~np.isnan(y)], rtol=0, atol=1e-12)


def test_small_multiples_draw_the_band_span_both_arms_and_the_persistent_exit_line(artists):
    from trajectory.config import twin_schedule

    fig = artists["small_multiples"]
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title().startswith("block ")]
    assert [int(ax.get_title().split()[1]) for ax in panels] == list(range(N_BLOCKS))
    twin_points = twin_schedule(SHORT_STEPS, TWIN_BUDGET)
    for block, ax in enumerate(panels):
        (span,) = ax.patches
        ys = span.get_path().transformed(span.get_patch_transform()).vertices[:, 1]
        low, high = band_expected(block)
        assert (ys.min(), ys.max()) == pytest.approx((low, high), abs=1e-9)  # t from an 8-digit table
        hub, twin = [ln for ln in ax.lines if ln.get_marker() == "."]
        x, y = hub_expected(block)
        np.testing.assert_array_equal(hub.get_xdata(), x)
        np.testing.assert_allclose(np.asarray(hub.get_ydata(), float), y, rtol=0, atol=1e-12)
        assert list(twin.get_xdata()) == [p for _, p in twin_points]  # the twin on its Pythia-equivalent step
        assert list(twin.get_ydata()) == pytest.approx([twin_value(block, t) for t, _ in twin_points], abs=1e-12)
        if block in EXPECTED_PERSISTENT:  # the design fixes the persistent exit of blocks 0-3 (None: no marker)
            vertical = [ln.get_xdata()[0] for ln in ax.lines if ln.get_linestyle() == "-."]
            assert vertical == [e for e in [EXPECTED_PERSISTENT[block]] if e is not None]


def test_final_profile_draws_finals_band_and_reference(artists, setup):
    from trajectory.config import twin_schedule

    manifest = setup[0]
    ax = artists["final_profile"].axes[0]
    by_style = {(ln.get_marker(), ln.get_linestyle()): ln for ln in ax.lines}
    hub, twin, ref = by_style[("o", "-")], by_style[("s", "--")], by_style[("^", ":")]
    assert list(hub.get_xdata()) == list(range(N_BLOCKS))
    assert list(hub.get_ydata()) == pytest.approx([hub_value(b, SHORT_STEPS[-1]) for b in range(N_BLOCKS)], abs=1e-12)
    last_twin = twin_schedule(SHORT_STEPS, TWIN_BUDGET)[-1][0]
    assert list(twin.get_ydata()) == pytest.approx([twin_value(b, last_twin) for b in range(N_BLOCKS)], abs=1e-12)
    assert list(ref.get_ydata()) == pytest.approx(list(manifest.reference_profile))
    (band,) = ax.collections
    ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    for block in range(N_BLOCKS):
        low, high = band_expected(block)
        assert np.isclose(ys, low, atol=1e-9).any() and np.isclose(ys, high, atol=1e-9).any()


def test_twin_vs_pythia_draws_each_arm_over_its_own_fraction_of_training(artists):
    from trajectory.config import twin_schedule

    ax = artists["twin_vs_pythia"].axes[0]
    hub = [ln for ln in ax.lines if ln.get_linestyle() == "-"]
    twin = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(hub) == len(twin) == N_BLOCKS
    steps = [t for t, _ in twin_schedule(SHORT_STEPS, TWIN_BUDGET)]
    for block in range(N_BLOCKS):
        x, y = hub_expected(block)
        np.testing.assert_allclose(hub[block].get_xdata(), x / SHORT_STEPS[-1], rtol=0, atol=1e-15)
        np.testing.assert_allclose(np.asarray(hub[block].get_ydata(), float), y, rtol=0, atol=1e-12)
        assert list(twin[block].get_xdata()) == pytest.approx([t / TWIN_BUDGET for t in steps], abs=1e-15)
        assert list(twin[block].get_ydata()) == pytest.approx([twin_value(block, t) for t in steps], abs=1e-12)


def test_a_dense_schedule_is_drawn_log_then_linear_and_pythias_on_symlog():
    """The axis turns linear after the doubling phase when the even part reaches ≤ 32× past it."""
    import matplotlib.pyplot as plt
    import numpy as np

    from trajectory.config import dense_steps, pythia_steps
    from trajectory.plots.context import doubling_phase_end, step_axis

    assert doubling_phase_end(dense_steps(64, 40, 800)) == 64
    assert doubling_phase_end(pythia_steps()) is None  # 143,000 / 512 ≫ 32: decades evenly (symlog)
    assert doubling_phase_end([0, 10, 20, 30]) is None  # no doubling phase
    fig, ax = plt.subplots()
    step_axis(ax, 800, log_until=64)
    to_axis = ax.xaxis.get_transform().transform
    x = np.array([0.0, 1.0, 3.0, 64.0, 200.0, 336.0, 800.0])
    y = to_axis(x)
    assert np.allclose(y[:4], np.log2(1 + x[:4]))  # logarithmic (base 2, shifted by one) up to 64
    assert np.isclose(y[5] - y[4], y[4] - y[3])  # past 64, 136 steps are as wide wherever they start
    eps = 1e-3  # the slope is continuous at the knee: no kink in a curve drawn across it
    assert np.isclose((to_axis([64 + eps])[0] - to_axis([64 - eps])[0]) / (2 * eps), 1 / (65 * np.log(2)), rtol=1e-3)
    plt.close(fig)


def test_a_twin_drawn_alone_on_its_pythia_equivalent_step_says_so(tmp_path, monkeypatch):
    """Without a checkpoint arm the twin still stands on its Pythia-equivalent step (here 10 × its own, a
    20,000-step schedule on a 2,000-update budget): the legend must say so, or the x axis reads as its updates."""
    from trajectory.plots import band

    frame = build_store(tmp_path / "store", steps=[0, 1, 2, 64, 512, 1000, 20_000], blocks=2)
    frame = frame.read().filter(pl.col("arm") != "hub")
    manifest = load_manifest(write_manifest(tmp_path / "m.toml", tmp_path / "store", arms=("random-init", "twin")))
    figures = []
    monkeypatch.setattr(band, "save", lambda fig, out, name: figures.append(fig) or ())
    drawn = band.small_multiples(frame, context_from(manifest, frame), tmp_path / "figs", arm="twin")
    twin = drawn.data["trained"]
    assert (twin["x"] != twin["step"]).any()  # the premise: drawn on the Pythia-equivalent step
    labels = [t.get_text() for t in figures[0].legends[0].get_texts()]
    assert any(lab.startswith("twin (our run), at its Pythia-equivalent step") for lab in labels), labels
