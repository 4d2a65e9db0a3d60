"""The report's controls section: per block the random-init verdict beside the verdict against each control
(:mod:`trajectory.verdicts.controls`), and each regulariser's effect with its interval (:mod:`.verdicts.effects`)."""

from __future__ import annotations

import polars as pl

from . import verdicts
from .report import Table
from .verdicts.controls import CONTROL_RULE, control_arms, controls_table
from .verdicts.effects import regularised_arms, regulariser_effects


def _arms(frame: pl.DataFrame, manifest) -> tuple[list[str], list[str]]:
    """(controls, regularised variants): from the manifest, or for a store read alone (no specs) every
    ``twin:NAME`` arm taken as a control (:func:`~trajectory.verdicts.controls.control_arms`) and no regulariser."""
    if not hasattr(manifest, "twin_specs"):
        return control_arms(None, frame), []
    return control_arms(manifest), regularised_arms(manifest)


def _f(v, d: int = 4) -> str:
    return "—" if v is None else f"{v:.{d}f}"


def control_json(frame: pl.DataFrame, manifest, metric: str = "r2_lin") -> dict:
    """``controls`` and ``regulariser`` of ``trajectory report --json``."""
    controls, regularised = _arms(frame, manifest)
    table = controls_table(frame, controls, metric, manifest.band_coverage, manifest.total_steps())
    effects = regulariser_effects(frame, regularised, metric, manifest.band_coverage)
    return {"rule": CONTROL_RULE, "controls": table.to_dicts(), "regulariser": effects.to_dicts()}


def verdict_json(frame: pl.DataFrame, manifest, metric: str = "r2_lin") -> dict:
    """What ``trajectory report --json`` prints: :func:`.summary.as_json` of the manifest's table, and
    :func:`control_json`."""
    table = verdicts.verdict_table(frame, metric, manifest.band_coverage, manifest.total_steps())
    return verdicts.as_json(table, manifest.name, metric, manifest.band_coverage) | control_json(
        frame, manifest, metric
    )


def control_blocks(frame: pl.DataFrame, manifest, random_init: dict[str, pl.DataFrame], metric: str = "r2_lin"):
    """The section's blocks, or [] when the manifest has no control and no regulariser."""
    controls, regularised = _arms(frame, manifest)
    table = controls_table(frame, controls, metric, manifest.band_coverage, manifest.total_steps())
    effects = regulariser_effects(frame, regularised, metric, manifest.band_coverage)
    if table.is_empty() and effects.is_empty():
        return []
    out: list = [CONTROL_RULE]
    if not table.is_empty():
        twin = random_init.get("twin")
        base = {} if twin is None else dict(twin.group_by("block").agg(pl.col("verdict").first()).iter_rows())
        present = [c for c in controls if c in set(table["control"])]
        rows = []
        for (block,), g in table.group_by("block", maintain_order=True):
            cells = [str(block), base.get(block, "—")]
            for c in present:
                r = g.filter(pl.col("control") == c)
                first = r.row(0, named=True)
                n, t = first["control_seeds"], first["t_quantile"]
                band = f"{_f(first['control_low'])}–{_f(first['control_high'])} (S={n}, t={_f(t, 2)})"
                cells += [first["verdict"], band]
            rows.append(cells)
        header = ["block", "vs random init"] + [h for c in present for h in (f"vs {c}", f"{c} band at last step")]
        out += [Table(header, rows), "Reasons: " + "; ".join(
            f"block {r['block']} vs {r['control']}: {r['reason']}"
            for r in table.unique(["control", "block"], keep="first").sort("control", "block").iter_rows(named=True)
        )]  # fmt: skip
        if (table["control_seeds"].drop_nulls() == 2).any():
            out.append(
                "With 2 control seeds the band's t quantile has 1 degree of freedom (t(0.975, 1) = 12.71, a "
                "half-width of 15.6 sd): such a band rarely excludes anything, and its verdicts say so."
            )
    if not effects.is_empty():
        out.append(
            "Regulariser effect: Δ = variant mean − plain-twin mean of the final value, with the pooled two-sample "
            "t interval across seeds (95%); held-out loss is the intact model's next-token loss on the held-out "
            "windows (swap_loss − swap_dloss)."
        )
        out.append(Table(
            ["variant", "quantity", "block", "n (variant, plain)", "plain", "variant", "Δ", "95% interval"],
            [[r["variant"], r["quantity"], "—" if r["block"] is None else str(r["block"]),
              f"{r['n_variant']}, {r['n_plain']}", _f(r["plain_mean"]), _f(r["variant_mean"]), _f(r["delta"]),
              f"{_f(r['low'])} … {_f(r['high'])}"] for r in effects.iter_rows(named=True)],
        ))  # fmt: skip
    return out
