"""A tiny experiment end to end, as a user runs it: sweep (local checkpoints + random-init), plot, report."""

import polars as pl
from builders import local_manifest
from hubserver import build_checkpoints

from trajectory.cli import main
from trajectory.store import Store

FIGURES = ["lines_by_block", "heatmap", "small_multiples", "final_profile", "companions"]


def test_sweep_then_plot_and_report_from_a_real_tiny_store(tmp_path, tokenizer, text_file, capsys):
    ckpts = build_checkpoints(tmp_path / "ck", [0, 2, 8, 32], tokenizer, same_as_step0=())
    toml = local_manifest(
        tmp_path / "tiny.toml",
        ckpts,
        text_file,
        [0, 2, 8, 32],
        tmp_path / "store",
        arms=("local", "random-init"),
        extra='[metric]\ncompanions = ["linearity_score", "effective_rank"]\n[random_init]\nseeds = 3',
    )
    assert main(["sweep", str(toml), "--no-progress"]) == 0, capsys.readouterr().err
    out = tmp_path / "figs"
    assert main(["report", str(toml), "--out", str(out)]) == 0, capsys.readouterr().err
    for name in FIGURES:
        for ext in ("png", "svg"):
            assert (out / f"{name}.{ext}").stat().st_size > 5_000, name
    rows = Store(tmp_path / "store").read()
    assert set(rows["arm"]) == {"local", "random-init"} and rows.height == 4 * 2 + 3 * 2
    report = (out / "report.md").read_text()
    assert not (out / "twin_vs_pythia.png").exists()  # no twin arm: not drawn, and the report says why
    assert "Not drawn: twin vs pythia: it needs usable rows of the twin and of a checkpoint arm" in report
    final = rows.filter((pl.col("arm") == "local") & (pl.col("step") == 32)).sort("block")["r2_lin"]
    for value in final:
        assert f"{value:.4f}" in report  # the report's final values are the store's
