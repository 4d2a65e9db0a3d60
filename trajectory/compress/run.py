"""One compression run: split once, score the intact model once, then the ablation table, the plan and the
folder, each when asked for (what ``trajectory compress`` and :func:`trajectory.api_compress.compress` do)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from ..config import Provenance, __version__
from ..data.tokens import EvalTokens
from ..engine.adapters import adapter_for
from ..engine.measure import evaluating
from ..engine.models import weights_hash
from ..engine.replaced import HeldoutCost
from ..errors import ConfigError
from .ablations import AblationReport, ablation_rows, model_shape
from .fitting import Windows, split_windows
from .folder import check_out, write_compressed
from .plan import Plan, greedy_plan
from .spec import CompressConfig


@dataclass(frozen=True)
class BaseModel:
    """What the base model is: its name, revision and which arm's kind of source (``hub``, ``local``,
    ``in-memory``), for each map's provenance."""

    name: str = "in-memory"
    revision: str | None = None
    kind: str = "in-memory"


@dataclass
class CompressionResult:
    """The ablation table (None unless asked for), the plan (None without a budget) and the folder written."""

    report: AblationReport | None
    plan: Plan | None
    record: dict | None
    out: Path | None


def compress_model(
    model: nn.Module,
    tokens: EvalTokens,
    cfg: CompressConfig,
    *,
    table: bool = True,
    out: str | Path | None = None,
    base: BaseModel = BaseModel(),
    tokenizer=None,
    device: str = "cpu",
) -> CompressionResult:
    """Ablations of every block (``table``), the greedy plan within ``cfg.budget_dloss`` and, with ``out``,
    the compressed folder.  ``model`` is left as it was (every patch is undone)."""
    if out is not None and cfg.budget_dloss is None:
        raise ConfigError("--out writes the plan's model: give --budget-dloss X as well")
    if out is not None:
        check_out(out)
    adapter = adapter_for(model.config.model_type)
    with evaluating(model):
        win = split_windows(model, tokens, cfg)
        heldout = HeldoutCost(model, adapter, win.heldout, win.batch, device)
        report = None
        if table:
            rows = ablation_rows(model, adapter, win, heldout, cfg, device)
            report = AblationReport(adapter.causal, heldout.intact_loss, rows, model_shape(model))
        plan = greedy_plan(model, adapter, win, heldout, cfg, device) if cfg.budget_dloss is not None else None
    record = plan_record(model, plan, heldout, win, cfg, base) if plan is not None else None
    path = write_compressed(out, model, plan.choices, record, tokenizer) if out is not None else None
    return CompressionResult(report, plan, record, path)


def plan_record(model, plan: Plan, heldout: HeldoutCost, win: Windows, cfg: CompressConfig, base: BaseModel) -> dict:
    """``compression.json`` without its file list: the plan, each map's provenance and the measured losses."""
    commit = weights_hash(model)
    prov = Provenance(
        experiment="compress",
        arm=base.kind,
        model=base.name,
        revision=base.revision or "main",
        step=None,
        commit=commit,
        data_hash=win.data_hash,
        metric_config=cfg.digest(),
        metric_core=cfg.metric.digest(),
    )
    steps = [
        {
            "block": c.block,
            "ablation": c.ablation.label,
            "tensors": sorted(f"block{c.block}.{k}" for k in c.tensors),
            "joint_dloss_after": c.dloss,
            "joint_dloss_high_after": c.dloss_high,
            "params_removed": c.params_removed,
            "flops_removed": c.flops_removed,
            "fitted_after": list(c.fitted_after),
            "provenance": prov.row(),
        }
        for c in plan.choices
    ]
    m = cfg.metric
    return {
        "code_version": __version__,
        "causal": heldout.causal,
        "base": {"model": base.name, "revision": base.revision, "commit": commit, **model_shape(model)},
        "settings": {
            "heldout_frac": m.heldout_frac,
            "seed": m.seed,
            "split": m.split,
            "rcond": m.rcond,
            "precision": m.compute_dtype,
            "ranks": cfg.ranks,
            "budget_dloss": cfg.budget_dloss,
        },  # fmt: skip
        "data_hash": win.data_hash,
        "heldout_windows": int(len(win.heldout)),
        "train_windows": int(len(win.train)),
        "intact_loss": heldout.intact_loss,
        "plan": steps,
        "joint": plan.joint,
        "joint_intact_fits": plan.joint_intact_fits,
        "params_removed": sum(c.params_removed for c in plan.choices),
        "flops_removed_per_token": sum(c.flops_removed for c in plan.choices),
    }
