"""`trajectory report`: the verdict table, what is missing and provenance, in Markdown and self-contained HTML."""

from __future__ import annotations

import base64
import json
import math
import re
import statistics

import pytest
from synthetic import (
    BAD,
    BASE,
    DATA_HASH,
    EXPECTED_VERDICT,
    FAILED_STEP,
    INF_SHIFT,
    METRIC_CONFIG,
    MISSING_STEP,
    OFFSETS,
    SHORT_STEPS,
    build_store,
    hub_value,
    series_store,
    write_manifest,
    write_unit,
)

import trajectory as tj
from trajectory import __version__
from trajectory.cli import main

BLOCKS = 5  # blocks 0..3 carry the known verdicts; block 4 has the non-ok row


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    store = build_store(root / "store", blocks=BLOCKS)
    write_unit(store, "hub", 0, 1, [0.0] * BLOCKS, data_hash="0therd4t4")  # another evaluation: set aside
    manifest = write_manifest(root / "synth.toml", root / "store", blocks=BLOCKS)
    assert main(["report", str(manifest), "--out", str(root / "out")]) == 0
    return root / "out", (root / "out" / "report.md").read_text(), (root / "out" / "report.html").read_text()


def first_block_table(md: str) -> dict[int, list[str]]:
    """The hub's per-block table: block -> cells."""
    section = md.split("## Per block: hub checkpoints")[1].split("| block |")[1].split("\n\n")[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    return {int(r[0].strip()): [c.strip() for c in r] for r in rows}


def test_block_table_has_the_known_events_verdicts_and_z(report):
    _, md, _ = report
    table = first_block_table(md)
    assert [table[b][6] for b in range(4)] == ["—", "64 above", "—", "256 below"]  # persistent exit
    assert [table[b][4] for b in range(4)] == ["—", "64 above", "64 above", "256 below"]  # first exit
    assert [table[b][7] for b in range(4)] == [EXPECTED_VERDICT[b] for b in range(4)]
    sd = statistics.stdev(OFFSETS)
    half = 2.7764451 * sd * math.sqrt(1.2)  # t(0.975, 4), five seeds
    assert table[1][3] == f"{0.2 / sd:.2f}"
    assert table[1][2] == f"{hub_value(1, SHORT_STEPS[-1]):.4f} at {SHORT_STEPS[-1]}"
    assert table[0][1] == f"{BASE[0] - half:.4f}–{BASE[0] + half:.4f} ({BASE[0]:.4f} ± {sd:.4f}, {len(OFFSETS)})"


def test_verdict_counts_follow_from_the_table_and_the_band_is_stated(report):
    _, md, _ = report
    verdicts = [row[7] for row in first_block_table(md).values()]
    kinds = ("learned-above", "learned-below", "within-band", "undetermined")
    listed = ", ".join(f"{verdicts.count(k)} {k}" for k in kinds if verdicts.count(k))
    assert f"hub checkpoints: of {BLOCKS} blocks, {listed} (one trained seed)." in md
    assert "95% prediction interval of `r2_lin` for one new random-init draw" in md
    assert "mean ± t(0.975, 4) · sd · √(1 + 1/5) = mean ± 3.04 sd" in md
    assert "≥ 3 points and spans ≥ 10% of training" in md
    shift = f"0 of {BLOCKS} block verdicts change; the final value moves by +{INF_SHIFT:.4f} to +{INF_SHIFT:.4f}."
    assert "hub checkpoints: with `r2_lin_inf` in place of `r2_lin`" in md and shift in md


def test_an_init_mismatch_heads_the_report_and_json(tmp_path, capsys):
    """Acceptance: an arm whose step 0 lies outside its band is undetermined, and the report says why first."""
    series_store(tmp_path / "store", {0: {0: 0.98, 64: 0.97, 1000: 0.97, 100_000: 0.96, 140_000: 0.96}})
    manifest = write_manifest(tmp_path / "m.toml", tmp_path / "store", arms=("hub", "random-init"), blocks=1)
    assert main(["report", str(manifest), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    head = md.split("## Verdict in numbers")[0]
    assert "## Warnings" in head and "step 0 of hub lies outside its random-init band" in head
    assert "of 1 blocks, 1 undetermined" in md and "learned-above" not in first_block_table(md)[0]
    capsys.readouterr()
    assert main(["report", str(manifest), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["warnings"] and out["blocks"][0]["verdict"] == "undetermined"
    assert out["blocks"][0]["warnings"] == out["warnings"]


def test_report_json_has_every_field_per_block_and_equals_the_api(report, tmp_path, capsys):
    root = report[0].parent
    assert main(["report", str(root / "synth.toml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["band"]["coverage"] == 0.95 and out["metric"] == "r2_lin"
    keys = {"arm", "block", "seed", "band_low", "band_high", "first_exit_step", "first_exit_direction",
            "peak_step", "peak", "persistent_exit_step", "persistent_holds", "final", "z", "verdict", "reason",
            "warnings"}  # fmt: skip
    assert all(keys <= set(b) for b in out["blocks"])
    assert {(b["arm"], b["block"]) for b in out["blocks"]} == {(a, k) for a in ("hub", "twin") for k in range(BLOCKS)}
    frame = tj.verdict(root / "synth.toml")
    assert frame.height == len(out["blocks"])
    for row, obj in zip(frame.iter_rows(named=True), out["blocks"]):
        assert (row["arm"], row["block"], row["verdict"], row["persistent_exit_step"]) == (
            obj["arm"], obj["block"], obj["verdict"], obj["persistent_exit_step"]
        )  # fmt: skip


def test_missing_steps_bad_rows_failures_and_other_evaluations_are_listed(report):
    _, md, _ = report
    missing = md.split("## What is missing")[1].split("## Provenance")[0]
    assert f"2 of {len(SHORT_STEPS)} scheduled steps have no usable row: {MISSING_STEP}, {FAILED_STEP}." in missing
    assert f"| hub | {BAD[0]} | 0 | {BAD[1]} | non-finite activations |" in missing
    assert "HTTP 503 from the Hub" in missing
    assert f"Set aside: {BLOCKS} rows of another evaluation (data_hash 0therd4t4" in missing


def test_spread_table_per_step(report):
    _, md, _ = report
    section = md.split("## Per block: hub checkpoints")[1].split("## ")[0]
    row0 = next(line for line in section.splitlines() if line.startswith("| 0 | 5 |"))
    assert f"| {statistics.stdev(BASE[:BLOCKS]):.4f} |" in row0
    assert f"| {BAD[0]} | {BLOCKS - 1} |" in section


def test_provenance_at_the_foot(report):
    _, md, _ = report
    foot = md.split("## Provenance")[1]
    for needle in (DATA_HASH, METRIC_CONFIG, __version__, "chu000064", "step64"):
        assert needle in foot


def test_markdown_links_the_figures_beside_it(report):
    out, md, _ = report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 5
    assert all((out / name).stat().st_size > 10_000 for name in links)


def test_html_is_self_contained(report):
    out, _, page = report
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 5
    assert base64.b64decode(images[0]) == (out / "lines_by_block.png").read_bytes()
    assert not re.search(r'src="(?!data:)', page)
    assert "<table>" in page and "non-finite activations" in page


def test_report_on_an_empty_store_is_one_line(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "m.toml", tmp_path / "empty")
    assert main(["report", str(manifest), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no rows for experiment" in err
    assert not (tmp_path / "out").exists()


def test_a_multi_seed_arm_shows_each_seed_and_the_agreed_block_verdict(tmp_path):
    from trajectory.manifest import load_manifest
    from trajectory.report import read_experiment, sections, to_markdown

    up = {0: 0.5, 500: 0.9, 1000: 0.9, 2000: 0.9}
    series_store(tmp_path / "store", {0: up, 1: {**up, 1000: 0.5, 2000: 0.5}}, arm="twin")
    manifest = load_manifest(write_manifest(tmp_path / "m.toml", tmp_path / "store", arms=("twin", "random-init"),
                                            blocks=1))  # fmt: skip
    frame, ignored, failures = read_experiment(manifest)
    md = to_markdown("t", sections(frame, manifest, [], failures, ignored))
    assert "twin (our run): of 1 blocks, 1 undetermined (2 trained seeds, 0, 1)." in md
    rows = [line for line in md.splitlines() if line.startswith("| 0 | ")]
    assert "| seed verdict | block verdict | reason (this seed) |" in md
    assert "| learned-above | undetermined |" in rows[0] and "| within-band | undetermined |" in rows[1]


def test_what_is_missing_counts_each_twin_seed_apart(tmp_path):
    """Seed 0 measured every twin step, seed 1 only the first three: seed 0's rows must not hide seed 1's gaps
    (the union of the seeds' steps said "0 of N scheduled steps have no usable row")."""
    from synthetic import TWIN_BUDGET

    from trajectory.config import twin_schedule
    from trajectory.report import missing_blocks

    store = build_store(tmp_path / "store", blocks=2)
    twin = twin_schedule(SHORT_STEPS, TWIN_BUDGET)
    for step, pythia in twin[:3]:
        write_unit(store, "twin", 1, step, [0.5, 0.5], pythia_step=pythia)
    path = write_manifest(tmp_path / "synth.toml", tmp_path / "store", blocks=2)
    path.write_text(path.read_text().replace(f"steps = {TWIN_BUDGET}\n", f"steps = {TWIN_BUDGET}\nseeds = [0, 1]\n"))
    lines = missing_blocks(store.read(), tj.load_manifest(path), [], store.read().head(0).select("data_hash"))
    lost = ", ".join(str(t) for t, _ in twin[3:])
    assert f"**twin** seed 0: 0 of {len(twin)} scheduled steps have no usable row." in lines
    assert f"**twin** seed 1: {len(twin) - 3} of {len(twin)} scheduled steps have no usable row: {lost}." in lines
