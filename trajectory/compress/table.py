"""The readable tables of a compression run: ablations grouped by thirds of the stack, and the plan."""

from __future__ import annotations

import math

from .ablations import THIRDS, AblationReport
from .plan import Plan


def _num(value, spec: str, width: int) -> str:
    ok = value is not None and not (isinstance(value, float) and not math.isfinite(value))
    return f"{value:>{width}{spec}}" if ok else f"{'—':>{width}}"


def format_ablations(report: AblationReport) -> str:
    """One line per block × ablation, grouped by lower / middle / upper third, with a legend."""
    causal = report.causal
    shape = report.shape
    head = [
        f"{shape.get('model_type')} d_model={shape.get('d_model')} blocks={shape.get('n_blocks')} "
        f"d_ffn={shape.get('d_ffn')}" + (f"; intact held-out loss {report.intact_loss:.4f} nats" if causal else ""),
        (
            "dloss: held-out next-token loss minus the intact model's (nats/token), [low, high] its paired 95% "
            "t interval over held-out windows; ppl×: perplexity ratio exp(dloss)"
            if causal
            else "encoder: rel_err = ‖H_ablated − H‖_F / ‖H‖_F of the final hidden states per held-out window, "
            "mean and 95% t interval"
        ),
        "params / FLOPs removed: the FFN's weights and biases minus the map's; FLOPs/token = 2 per weight",
    ]
    cols = (
        ("dloss", "dloss_low", "dloss_high", "ppl_ratio")
        if causal
        else ("rel_error", "rel_error_low", "rel_error_high")
    )
    names = ("dloss", "low", "high", "ppl×") if causal else ("rel_err", "low", "high")
    header = f"{'third':>6} {'block':>5} {'ablation':>8} " + " ".join(f"{n:>9}" for n in names)
    header += f" {'params_rm':>10} {'flops_rm':>10} {'r2_lin':>7}"
    lines = [*head, header]
    for part in THIRDS:
        for r in (r for r in report.rows if r["third"] == part):
            cells = " ".join(_num(r.get(c), ".4f", 9) for c in cols)
            lines.append(
                f"{part:>6} {r['block']:>5} {r['ablation']:>8} {cells} {r['params_removed']:>10} "
                f"{r['flops_removed']:>10} {_num(r['r2_lin'], '.4f', 7)}"
            )
    return "\n".join(lines)


def format_plan(plan: Plan, budget: float, causal: bool = True) -> str:
    """The chosen steps, the measured joint cost, and the same plan fitted on the intact model."""
    unit = "nats" if causal else "(relative error)"
    key = "dloss" if causal else "rel_error"
    lines = [
        f"plan within budget {budget} {unit} (on the upper end of the joint cost's paired 95% interval): "
        f"{len(plan.choices)} block(s) replaced"
    ]
    for k, c in enumerate(plan.choices, 1):
        lines.append(
            f"  {k}. block {c.block} → {c.ablation.label:<7} joint {key} after this step {c.dloss:.5f} "
            f"(95% upper {c.dloss_high:.5f}); "
            f"removes {c.params_removed} params, {c.flops_removed} FLOPs/token"
        )
    j, i = plan.joint, plan.joint_intact_fits
    low, high = j.get(f"{key}_low"), j.get(f"{key}_high")
    interval = f"[{_num(low, '.5f', 0)}, {_num(high, '.5f', 0)}]"
    lines.append(f"joint {key} (measured, sequential fits): {j.get(key, 0.0):.5f} {interval}")
    if i:
        lines.append(f"joint {key} of the same plan with every map fitted on the intact model: {i[key]:.5f}")
    return "\n".join(lines)
