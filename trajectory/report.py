"""The report: figures, the verdict per block, what is missing, and provenance — as Markdown and HTML.

From the store's frame (and failure records) through :mod:`trajectory.verdicts`; nothing is measured here.
``report.md`` links the PNGs; ``report.html`` embeds them.  Sections: warnings (a trained arm whose step 0 is
outside its own random-init band), the verdict in numbers (counts, band, rule, what ``r2_lin_inf`` moves),
figures, per trained arm a table per block (band, final, z, exits, peak, k-fold interval, verdict, reason),
the spread across blocks against init, the token tail at init and last (if stored), whether R²_lin predicts
the cost of replacing a block (if a Δloss is stored), what is missing, and provenance.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from . import verdicts
from .atomic import atomic_bytes
from .config import __version__, arm_label, natural_key
from .errors import TrajectoryError
from .store import Store
from .verdicts import replaceability as replaceable


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    collapsed: bool = False  # long tables fold away in HTML


@dataclass(frozen=True)
class Figure:
    caption: str
    png: Path


Block = str | Table | Figure  # a paragraph, a table or a figure


def read_experiment(manifest, data_hash: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame, list[dict]]:
    """The store's rows of ``manifest``'s experiment and one evaluation, the rows set aside, and the failures."""
    store = Store(manifest.store_dir)
    frame = store.read()
    frame = frame.filter(pl.col("experiment") == manifest.name)
    if frame.is_empty():
        raise TrajectoryError(
            f"store {manifest.store_dir} has no rows for experiment '{manifest.name}'; "
            f"run `trajectory sweep {manifest.source}` first"
        )
    kept, ignored = verdicts.one_evaluation(frame, data_hash)
    if data_hash is not None and kept["data_hash"][0] != data_hash:
        raise TrajectoryError(
            f"store {manifest.store_dir} has no rows with data_hash {data_hash}; "
            f"it has {sorted(set(frame['data_hash'].to_list()))}"
        )
    matched, other_inits = verdicts.one_init(kept, manifest.init_scheme)
    inits = pl.DataFrame(
        {"data_hash": [None] * len(other_inits), "metric_config": [None] * len(other_inits), "init": other_inits},
        schema={"data_hash": pl.Utf8, "metric_config": pl.Utf8, "init": pl.Utf8},
    ).join(  # how many random-init rows of each other init were set aside
        kept.filter(pl.col("arm") == verdicts.BAND_ARM)
        .with_columns(init=pl.col("commit").map_elements(verdicts.init_of, return_dtype=pl.Utf8))
        .group_by("init")
        .agg(pl.len().alias("rows")),
        on="init",
    )
    return matched, pl.concat([ignored, inits], how="diagonal_relaxed"), store.failures()


def fmt(value, digits: int = 4) -> str:
    """A cell: ``—`` for a missing or non-finite value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _step(step, pythia, twin: bool) -> str:
    """A step, with its Pythia-equivalent step for the twin."""
    if step is None:
        return "—"
    return f"{step} (Pythia {pythia})" if twin and pythia is not None and pythia != step else str(step)


def _event(r: dict, name: str, twin: bool, direction: str | None = None) -> str:
    step = _step(r[f"{name}_step"], r[f"{name}_pythia_step"], twin)
    return step if r[f"{name}_step"] is None else step + (f" {direction}" if direction else "")


def block_rows(table: pl.DataFrame, arm: str, frame: pl.DataFrame | None = None) -> Table:
    """Per block (and seed, for an arm with several): the band, final value, z, the three events, the verdict."""
    twin, many = arm == "twin", table["seed"].n_unique() > 1
    cv = verdicts.interval_cells(frame, arm) if frame is not None else {}
    header = (
        ("block",)
        + (("seed",) if many else ())
        + ("band (mean ± sd, seeds)", "final", "z", "first exit", "peak", "persistent exit")
        + (("k-fold mean [95% interval], final step",) if cv else ())
        + (("seed verdict", "block verdict", "reason (this seed)") if many else ("verdict", "reason"))
    )
    rows = []
    for r in table.iter_rows(named=True):
        persistent = _event(r, "persistent_exit", twin, r["persistent_direction"])
        if r["persistent_exit_step"] is not None and not r["persistent_holds"]:
            persistent += ", not yet"
        band = f"{fmt(r['band_low'])}–{fmt(r['band_high'])}" if r["band_low"] is not None else "none"
        cells = (
            (str(r["block"]),)
            + ((fmt(r["seed"]),) if many else ())
            + (
                f"{band} ({fmt(r['init_mean'])} ± {fmt(r['init_sd'])}, {fmt(r['band_seeds'])})",
                f"{fmt(r['final'])} at {_step(r['final_step'], r['final_pythia_step'], twin)}",
                fmt(r["z"], 2),
                _event(r, "first_exit", twin, r["first_exit_direction"]),
                f"{fmt(r['peak'])} at {_step(r['peak_step'], r['peak_pythia_step'], twin)}",
                persistent,
            )
            + ((cv.get((r["block"], r["seed"], r["final_step"]), "—"),) if cv else ())
            + ((r["seed_verdict"], r["verdict"], r["seed_reason"]) if many else (r["verdict"], r["reason"]))
        )
        rows.append(cells)
    return Table(header, tuple(rows))


def spread_rows(spread: pl.DataFrame) -> Table:
    header = ("step", "blocks", "spread across blocks (sd; mean over seeds)", "at init (mean ± sd over seeds)", "ratio")
    rows = tuple(
        (
            str(r["step"]),
            str(r["n_blocks"]),
            fmt(r["spread"]),
            f"{fmt(r['init_spread'])} ± {fmt(r['init_spread_sd'])}",
            fmt(r["ratio"], 2),
        )
        for r in spread.iter_rows(named=True)
    )
    return Table(header, rows, collapsed=len(rows) > 20)


def missing_blocks(
    frame: pl.DataFrame, manifest, failures: list[dict], ignored: pl.DataFrame, metric: str = "r2_lin"
) -> list[Block]:
    """What the store lacks: unmeasured scheduled steps, non-ok rows, missing seeds, failures, set-aside rows."""
    ok = verdicts.usable(frame, metric)
    out: list[Block] = []
    expected = manifest.expected_steps()
    for arm in manifest.arms:
        have = set(ok.filter(pl.col("arm") == arm)["step"].to_list())
        if arm in expected:
            out += missing_steps(ok.filter(pl.col("arm") == arm), arm, expected[arm], manifest)
        elif arm == "random-init":
            seeds = set(ok.filter(pl.col("arm") == arm)["seed"].to_list())
            lost = [s for s in manifest.random_init_seeds if s not in seeds]
            out.append(f"**random-init**: {len(seeds)} seeds measured" + (f"; missing seeds {lost}." if lost else "."))
        elif not have:
            out.append(f"**{arm}**: no usable rows in the store.")
    bad = frame.filter(pl.col("status") != "ok").sort("arm", "step", "block")
    if len(bad):
        out.append(
            Table(
                ("arm", "step", "seed", "block", "status"),
                tuple(
                    (r["arm"], fmt(r["step"]), fmt(r["seed"]), fmt(r["block"]), r["status"])
                    for r in bad.iter_rows(named=True)
                ),
                collapsed=len(bad) > 20,
            )
        )
    if failures:
        out.append(
            Table(
                ("failed unit", "what", "reason"),
                tuple(
                    (
                        str(f.get("key", ""))[:12],
                        ", ".join(f"{k}={v}" for k, v in f.items() if k not in ("key", "reason")),
                        str(f.get("reason", "")),
                    )
                    for f in sorted(failures, key=_failure_order)
                ),
            )
        )
    for r in ignored.iter_rows(named=True):
        if r.get("init"):
            out.append(
                f"Set aside: {r['rows']} random-init rows drawn with init `{r['init']}`, not the manifest's "
                "(`[random_init] init`); the band uses only draws of one init."
            )
            continue
        out.append(
            f"Set aside: {r['rows']} rows of another evaluation (data_hash {r['data_hash']}, "
            f"metric_config {r['metric_config']})."
        )
    out = out or ["Nothing is missing."]
    if manifest.data is None:  # a store read alone: its "schedule" is what it stored or saw fail
        out.insert(0, "No manifest: the steps and seeds are those the store holds or recorded as failed.")
    return out


def missing_steps(rows: pl.DataFrame, arm: str, steps: tuple[int, ...], manifest) -> list[str]:
    """One line per seed of a trained arm (the twin's ``[twin] seeds``; one line for a hub or local arm): how many
    of ``steps`` have no usable row of that seed.  Seeds are counted apart: one seed's rows never hide another's
    gaps."""
    twin = getattr(manifest, "twin", None)
    seeds = twin.seeds if arm == "twin" and twin is not None else (None,)
    out = []
    for seed in seeds:
        mine = rows if seed is None else rows.filter(pl.col("seed") == seed)
        have = set(mine["step"].to_list())
        lost = [s for s in steps if s not in have]
        who = f"**{arm}**" + (f" seed {seed}" if len(seeds) > 1 else "")
        out.append(
            f"{who}: {len(lost)} of {len(steps)} scheduled steps have no usable row"
            + (f": {', '.join(map(str, lost))}." if lost else ".")
        )
    return out


def _failure_order(record: dict) -> tuple:
    """Failure records by arm, then revision in natural order (step2 before step10), then seed."""
    return (str(record.get("arm")), natural_key(str(record.get("revision"))), str(record.get("seed")))


def provenance_blocks(frame: pl.DataFrame, manifest) -> list[Block]:
    units = (
        frame.group_by("key")
        .agg(pl.col("arm", "seed", "revision", "step", "commit", "weights_hash").first())
        .sort("arm", "seed", "step")
    )
    configs = ", ".join(sorted({str(c) for c in frame["metric_config"].unique().to_list()}))
    hashes = ", ".join(sorted({str(h) for h in frame["data_hash"].unique().to_list()}))
    if manifest.data is None:  # a store read without its manifest: the rows name data and metric by hash only
        described = [
            f"Experiment `{manifest.name}`, read from the store {manifest.store_dir} without its manifest; "
            f"model `{manifest.repo}`.",
            f"Data hash: {hashes}; the evaluation text is not recorded in the store.",
            f"Metric config: {configs} (its settings are not recorded in the store).",
        ]
    else:
        described = [
            f"Experiment `{manifest.name}` ({manifest.source.name}); model `{manifest.repo or manifest.model_config}`.",
            f"Data hash: {hashes}; evaluation: {manifest.data.kind} `{manifest.data.path}` column "
            f"`{manifest.data.column}`, {manifest.data.tokens} tokens, seq_len {manifest.data.seq_len}, "
            f"data seed {manifest.data.seed}; {verdicts.evaluation_sentence(frame)}",
            f"Metric config: {configs} ({manifest.metric}).",
        ]
    return [
        *described,
        f"Random-init draws: {verdicts.init_names(frame)}; band coverage {manifest.band_coverage:g} (`[random_init]`).",
        f"Code version of the rows: {', '.join(sorted({str(v) for v in frame['code_version'].unique().to_list()}))};"
        f" report written by trajectory {__version__}.",
        Table(
            ("arm", "seed", "revision", "step", "commit", "weights hash"),
            tuple(
                (r["arm"], fmt(r["seed"]), fmt(r["revision"]), fmt(r["step"]), fmt(r["commit"]), fmt(r["weights_hash"]))
                for r in units.iter_rows(named=True)
            ),
            collapsed=True,
        ),
    ]


def figure_blocks(drawn: list) -> list[Block]:
    """Each drawn figure, and for each one not drawn a line saying why."""
    return [
        Figure(d.name.replace("_", " "), d.paths[0])
        if d.paths
        else f"Not drawn: {d.name.replace('_', ' ')}: {d.skipped}."
        for d in drawn
    ]


def warning_blocks(tables: dict[str, pl.DataFrame]) -> list[Block]:
    """The init check's warnings, one per arm that has one (they head the report)."""
    return [
        f"**Warning — {arm_label(arm)}:** {w}"
        for arm, t in tables.items()
        for w in sorted({x for x in t["warning"].to_list() if x})
    ]


def verdict_tables(frame: pl.DataFrame, manifest, metric: str = "r2_lin") -> dict[str, pl.DataFrame]:
    """Each trained arm's verdict table under the manifest's band coverage and training lengths."""
    table = verdicts.verdict_table(frame, metric, manifest.band_coverage, manifest.total_steps())
    return {arm: g.drop("arm") for (arm,), g in table.group_by("arm", maintain_order=True)}


def verdict_blocks(frame: pl.DataFrame, manifest, tables: dict[str, pl.DataFrame], metric: str) -> list[Block]:
    """The verdict in numbers: counts per arm, the band and the rule, and what ``r2_lin_inf`` changes."""
    if not tables:
        return ["No trained rows in the store."]
    out: list[Block] = [verdicts.arm_sentence(t, arm) for arm, t in tables.items()]
    out.append(verdicts.band_sentence(pl.concat(list(tables.values())), manifest.band_coverage, metric))
    out.append(verdicts.RULE + " z = (final − mean) / sd is shown beside the verdict but does not decide it.")
    if metric == "r2_lin":
        shift = verdicts.compare_metrics(
            frame, ("r2_lin", "r2_lin_inf"), manifest.band_coverage, manifest.total_steps()
        )
        out.append(
            "Finite-sample correction: `r2_lin_inf` is R²_lin extrapolated to unlimited train rows (docs/verdicts.md). "
            + " ".join(verdicts.metric_shift_sentences(shift))
        )
    return out


def sections(
    frame: pl.DataFrame, manifest, drawn: list, failures: list[dict], ignored: pl.DataFrame, metric: str = "r2_lin"
) -> list[tuple[str, list[Block]]]:
    """The report's content, independent of the output format; warnings first."""
    tables = verdict_tables(frame, manifest, metric)
    warnings = warning_blocks(tables) + [f"**Warning — random init:** {w}" for w in verdicts.shared_inits(frame)]
    out = [("Warnings", warnings)] if warnings else []
    out += [
        ("Verdict in numbers", verdict_blocks(frame, manifest, tables, metric)),
        ("Figures", figure_blocks(drawn)),
    ]
    out += [("Against the controls", c) for c in [control_blocks(frame, manifest, tables, metric)] if c]
    for arm, table in tables.items():
        out.append(
            (
                f"Per block: {arm_label(arm)}",
                [
                    block_rows(table, arm, frame),
                    *seed_blocks(frame, arm, manifest.band_coverage, metric),
                    "Spread across blocks per step, against the spread at initialisation:",
                    spread_rows(verdicts.spread_by_step(frame, arm, metric)),
                    *_tail(frame, arm),
                ],
            )
        )
    parts = [x for a in replaceable.found(frame, metric) for x in replaceable.report_parts(a, metric)]
    if parts:  # docs/compress.md: each Δloss's ρ and interval, then every point
        out.append(("Does linearity predict replaceability?", [p if isinstance(p, str) else Table(*p) for p in parts]))
    out.append(("What is missing", missing_blocks(frame, manifest, failures, ignored, metric)))
    out.append(("Provenance", provenance_blocks(frame, manifest)))
    return out


def _tail(frame: pl.DataFrame, arm: str) -> list[Block]:  # the token tail's concentration, when stored
    rows = verdicts.token_tail_rows(frame, arm)
    return [verdicts.TAIL_RULE, Table(verdicts.TAIL_HEADER, tuple(rows))] if rows else []


def to_markdown(title: str, content: list[tuple[str, list[Block]]]) -> str:
    lines = [f"# {title}", ""]
    for heading, blocks in content:
        lines += [f"## {heading}", ""]
        for b in blocks:
            if isinstance(b, Table):
                lines += [f"<details><summary>{len(b.rows)} rows</summary>", ""] if b.collapsed else []
                lines += ["| " + " | ".join(b.header) + " |", "|" + "---|" * len(b.header)]
                lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in b.rows]
                lines += ["", "</details>"] if b.collapsed else []
            elif isinstance(b, Figure):
                lines.append(f"![{b.caption}]({b.png.name})")
            else:
                lines.append(b)
            lines.append("")
    return "\n".join(lines)


def _html_block(b: Block) -> str:
    if isinstance(b, Figure):
        data = base64.b64encode(b.png.read_bytes()).decode()
        return f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}"></figure>'
    if isinstance(b, str):
        text = html.escape(b)
        for mark, tag in (("**", "b"), ("`", "code")):  # the two inline marks the report uses
            parts = text.split(mark)
            text = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(parts))
        return f"<p>{text}</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in b.rows)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f"<details><summary>{len(b.rows)} rows</summary>{table}</details>" if b.collapsed else table


STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}img{max-width:100%}"
    "table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
)


def to_html(title: str, content: list[tuple[str, list[Block]]]) -> str:
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    for heading, blocks in content:
        parts.append(f"<h2>{html.escape(heading)}</h2>" + "".join(_html_block(b) for b in blocks))
    return "".join(parts) + "</body></html>"


def write_report(
    frame: pl.DataFrame,
    manifest,
    out: str | Path,
    drawn: list,
    failures: list[dict],
    ignored: pl.DataFrame | None = None,
    metric: str = "r2_lin",
) -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.html``; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    empty = pl.DataFrame(schema={"data_hash": pl.Utf8, "metric_config": pl.Utf8, "rows": pl.UInt32})
    ignored = ignored if ignored is not None else empty
    content = sections(frame, manifest, drawn, failures, ignored, metric)
    title = f"FFN linearity across training: {manifest.name} ({manifest.repo or 'inline config'})"
    md, page = out / "report.md", out / "report.html"
    atomic_bytes(md, to_markdown(title, content)), atomic_bytes(page, to_html(title, content))
    return md, page


from .controlreport import control_blocks, verdict_json  # noqa: E402, F401  (they build on Table, above)
from .seedreport import seed_blocks  # noqa: E402
