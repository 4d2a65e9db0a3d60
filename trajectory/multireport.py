"""Several experiments in one report: do the trained runs of one architecture reach the same place?

``trajectory report A.toml B.toml …``: the experiments are read and checked by :mod:`trajectory.experiments`,
the numbers are :func:`trajectory.verdicts.runs.compare_runs`, and the page is built from the same blocks as the
single report (:mod:`trajectory.report`): warnings first, the answer in numbers with the bands and the rules
that decide, the figure (:func:`trajectory.plots.runs.trained_band`), per block the trained band at the last
common step beside the random-init band with the runs' verdicts and the answer, each run's verdict per block,
the trained band per block and step, the runs and what is set aside, and provenance at the foot.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from . import verdicts
from .atomic import atomic_bytes
from .config import __version__
from .experiments import Experiments, experiments_json, set_aside_sentences
from .report import Block, Table, figure_blocks, fmt, to_html, to_markdown


def runs_json(exps: Experiments, cmp: verdicts.Comparison) -> dict:
    """What ``trajectory report A.toml B.toml --json`` prints."""
    out = verdicts.comparison_json(cmp, experiments_json(exps))
    out["set_aside"] = set_aside_sentences(exps)
    return out


def _band_cell(low, high, mean, sd, n) -> str:
    return "none" if low is None else f"{fmt(low)}–{fmt(high)} ({fmt(mean)} ± {fmt(sd)}, {n})"


def _counted(row: dict, keys) -> str:
    return ", ".join(f"{row[k]} {k}" for k in keys if row[k]) or "none"


def answer_blocks(exps: Experiments, cmp: verdicts.Comparison) -> list[Block]:
    """The answer in numbers (counts per block), what the bands are, and the rules that decide."""
    b, n = cmp.blocks, len(cmp.runs)
    agree = b.filter(pl.col("agreement") == "agree")
    by_verdict = {v: agree.filter(pl.col("verdict") == v).height for v in verdicts.VERDICTS}
    count = {k: b.filter(pl.col("agreement") == k).height for k in verdicts.runs.AGREEMENT}
    final = {k: b.filter(pl.col("final_agreement") == k).height for k in verdicts.runs.AGREEMENT}
    data_hash, metric_config = exps.items[0].evaluation
    half = verdicts.prediction_half_width(1.0, n, cmp.coverage)
    return [
        f"{n} runs of one architecture on one evaluation (data_hash {data_hash}, metric config {metric_config}), "
        f"`{cmp.metric}`: {', '.join(r.label for r in cmp.runs)}.",
        f"Verdicts: of {b.height} blocks, all runs agree on {count['agree']}"
        + (f" ({_counted(by_verdict, verdicts.VERDICTS)})" if count["agree"] else "")
        + f", the runs disagree on {count['disagree']}, and {count['undetermined']} are undetermined.",
        f"Final values: of {b.height} blocks, the runs' final values agree on {final['agree']}, disagree on "
        f"{final['disagree']}, and {final['undetermined']} are undetermined.",
        verdicts.band_sentence(cmp.run_table, cmp.coverage, cmp.metric),
        verdicts.TRAINED_BAND + (f" With R = {n} at {cmp.coverage:.0%}: mean ± {half:.2f} sd." if half else ""),
        "Steps are matched by step number; the trained band uses only the steps every run measured"
        + ("." if not any(cmp.outside_band().values()) else " (the runs' schedules differ: see below)."),
        verdicts.RULE,
        verdicts.BLOCK_RULE,
        verdicts.FINAL_RULE,
    ]


def block_answer_table(cmp: verdicts.Comparison) -> Table:
    header = ("block", "random-init band (mean ± sd, seeds)", "last common step", "trained band (mean ± sd, runs)",
              "trained min–max", "W_T / W_0", "s_T / s_0, p", "final values", "runs' verdicts", "answer")  # fmt: skip
    rows = tuple(
        (
            str(r["block"]),
            _band_cell(r["init_low"], r["init_high"], r["init_mean"], r["init_sd"], r["init_seeds"]),
            fmt(r["final_step"]),
            _band_cell(r["trained_low"], r["trained_high"], r["trained_mean"], r["trained_sd"], r["trained_runs"]),
            f"{fmt(r['trained_min'])}–{fmt(r['trained_max'])}",
            fmt(r["width_ratio"], 2),
            f"{fmt(r['sd_ratio'], 2)}, p = {r['p']:.2g}" if r["p"] is not None else fmt(r["sd_ratio"], 2),
            r["final_agreement"],
            _counted(r, verdicts.VERDICTS),
            r["reason"],
        )
        for r in cmp.blocks.iter_rows(named=True)
    )
    return Table(header, rows)


def run_table(cmp: verdicts.Comparison) -> Table:
    header = ("run", "block", "final", "persistent exit", "verdict", "reason")
    rows = []
    for r in cmp.run_table.sort("run", "block").iter_rows(named=True):
        exit_ = "—" if r["persistent_exit_step"] is None else f"{r['persistent_exit_step']} {r['persistent_direction']}"
        exit_ += ", not yet" if r["persistent_exit_step"] is not None and not r["persistent_holds"] else ""
        final = "—" if r["final"] is None else f"{fmt(r['final'])} at {r['final_step']}"
        rows.append((r["label"], str(r["block"]), final, exit_, r["verdict"], r["reason"]))
    return Table(header, tuple(rows), collapsed=len(rows) > 20)


def band_table(cmp: verdicts.Comparison) -> Table:
    header = ("block", "step", "runs", "trained mean ± sd", "trained min–max", "trained band", "random-init band")
    rows = tuple(
        (
            str(r["block"]),
            str(r["step"]),
            str(r["trained_runs"]),
            f"{fmt(r['trained_mean'])} ± {fmt(r['trained_sd'])}",
            f"{fmt(r['trained_min'])}–{fmt(r['trained_max'])}",
            f"{fmt(r['trained_low'])}–{fmt(r['trained_high'])}",
            f"{fmt(r['init_low'])}–{fmt(r['init_high'])}",
        )
        for r in cmp.band.iter_rows(named=True)
    )
    return Table(header, rows, collapsed=len(rows) > 20)


def runs_blocks(exps: Experiments, cmp: verdicts.Comparison) -> list[Block]:
    outside = cmp.outside_band()
    rows = tuple(
        (
            run.label,
            f"{run.experiment} ({e.file})",
            run.arm,
            str(run.seed),
            str(e.manifest.store_dir),
            str(cmp.series.filter(pl.col("run") == i)["step"].n_unique()),
            ", ".join(map(str, outside[run.label])) or "none",
            fmt(run.total_steps),
        )
        for i, (run, e) in enumerate((r, e) for e in exps.items for r in e.runs)
    )
    header = ("run", "experiment", "arm", "seed", "store", "steps measured", "steps not in the band", "training steps")
    return [Table(header, rows), *set_aside_sentences(exps)]


def provenance_blocks(exps: Experiments) -> list[Block]:
    versions = ", ".join(sorted({str(v) for v in exps.frame["code_version"].unique().to_list()}))
    return [
        Table(
            ("experiment", "model", "data_hash", "metric config", "architecture compared by"),
            tuple(
                (e.manifest.name, e.manifest.repo or "inline config", *e.evaluation, e.evidence()) for e in exps.items
            ),
        ),
        f"Random-init draws: {verdicts.init_names(exps.frame)}, each draw counted once (a draw is a pure function "
        f"of its seed and its commit `init:<scheme>/config:<hash>`); band coverage {exps.coverage:g}.",
        f"Code version of the rows: {versions}; report written by trajectory {__version__}.",
    ]


def sections(exps: Experiments, cmp: verdicts.Comparison, drawn: list) -> list[tuple[str, list[Block]]]:
    warnings = [f"**Warning — {w}**" for w in cmp.warnings()]
    return ([("Warnings", warnings)] if warnings else []) + [
        ("Do the runs reach the same place?", answer_blocks(exps, cmp)),
        ("Figures", figure_blocks(drawn)),
        ("Per block", [block_answer_table(cmp)]),
        ("Each run's verdict per block", [run_table(cmp)]),
        ("Trained band per block and step", [band_table(cmp)]),
        ("Runs, and what is set aside", runs_blocks(exps, cmp)),
        ("Provenance", provenance_blocks(exps)),
    ]


def write_runs_report(exps: Experiments, cmp: verdicts.Comparison, out: str | Path, drawn: list) -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.html`` (figures embedded) for the experiments compared."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    content = sections(exps, cmp, drawn)
    title = f"Do {len(cmp.runs)} trained runs reach the same place? {', '.join(exps.names)}"
    md, page = out / "report.md", out / "report.html"
    atomic_bytes(md, to_markdown(title, content))
    atomic_bytes(page, to_html(title, content))
    return md, page


def _model_label(exps: Experiments) -> str:
    """The experiments for figure titles: both when at most two, else the first and the last (their models are
    in the report's provenance)."""
    names = exps.names
    return " and ".join(names) if len(names) <= 2 else f"{names[0]} … {names[-1]} ({len(names)} experiments)"


def draw(exps: Experiments, cmp: verdicts.Comparison, out: Path) -> list:
    """The comparison's figure (:func:`trajectory.plots.runs.trained_band`) into ``out``."""
    from dataclasses import replace

    from .plots import context_from
    from .plots.runs import trained_band

    first = exps.items[0].manifest
    ctx = replace(
        context_from(first, exps.frame, exps.metric), experiment="+".join(exps.names), model=_model_label(exps)
    )
    return [trained_band(cmp, ctx, Path(out))]


def groups_blocks(names: tuple[str, str], groups: tuple[Experiments, Experiments], table: pl.DataFrame) -> list[Block]:
    """Which group's final values spread further, per block: the rule, a table, and one sentence per block."""
    from .verdicts.groups import GROUP_RULE

    rows = [
        [str(r["block"]), f"{fmt(r['sd_a'])} ({r['runs_a']})", f"{fmt(r['sd_b'])} ({r['runs_b']})",
         "–" if r["p"] is None else f"{r['p']:.2g}", r["decides"]]
        for r in table.iter_rows(named=True)
    ]  # fmt: skip
    head = ["block", f"sd {names[0]} (runs)", f"sd {names[1]} (runs)", "F test p", "spreads further"]
    return [
        f"Group {names[0]}: {', '.join(groups[0].names)}. Group {names[1]}: {', '.join(groups[1].names)}.",
        GROUP_RULE,
        Table(head, rows),
        *table["sentence"].to_list(),
        "What this can show: which factor moves a block's final R²_lin more, among runs that differ in that factor "
        "alone. What it cannot: why, or anything about a factor neither group varies; with few runs a group, most "
        "blocks stay undetermined unless the spreads differ by a large factor.",
    ]


def write_groups_report(first: list, second: list, data_hash, metric: str, out, as_json: bool) -> list:
    """``report A B … --against C D …``: each group's runs report in ``out/<group>/`` and ``out/groups.md``
    (and ``.html``) with :func:`groups_blocks`; with ``as_json``, the per-block table as JSON on stdout only."""
    import json

    from .atomic import atomic_bytes, writable_folder
    from .experiments import compare, default_name, read_experiments
    from .manifest import load_manifest
    from .verdicts.groups import which_decides

    read_experiments([load_manifest(m) for m in [*first, *second]], data_hash, metric)  # one architecture, evaluation
    groups = tuple(read_experiments([load_manifest(m) for m in g], data_hash, metric) for g in (first, second))
    names = (default_name(groups[0].names), default_name(groups[1].names))
    cmps = tuple(compare(g) for g in groups)
    table = which_decides(cmps[0], cmps[1], names, groups[0].coverage)
    if as_json:
        print(json.dumps({"groups": list(names), "blocks": table.to_dicts()}))
        return []
    root = writable_folder(out or Path("figures") / f"{names[0]}-vs-{names[1]}", "--out")
    paths = []
    for exps, cmp, name in zip(groups, cmps, names):
        sub = root / name
        sub.mkdir(parents=True, exist_ok=True)
        paths += write_runs_report(exps, cmp, sub, draw(exps, cmp, sub))
    content = [("Which group's final values spread further?", groups_blocks(names, groups, table))]
    title = f"{names[0]} against {names[1]}"
    paths.append(atomic_bytes(root / "groups.md", to_markdown(title, content)))
    paths.append(atomic_bytes(root / "groups.html", to_html(title, content)))
    return paths
