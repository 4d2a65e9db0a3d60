"""A joint compression plan under a held-out loss budget, chosen greedily and re-measured at every step.

Start from the intact model.  At each step, with the blocks chosen so far already replaced:

1. take every remaining block's train moments *from the compressed model* (a sequential fit: block l's map
   is fitted to the inputs the compressed model actually feeds it, so errors upstream are partly absorbed);
2. for every remaining block and every ablation that removes FLOPs (remove, mean, rank r with
   ``r (d_in + d_out) < d_in d_out``, affine; a rank at or above that costs more than the affine map, which
   fits at least as well), fit the map and measure the *joint* held-out cost of the plan with it added;
3. score each candidate by the upper end ``U`` of the paired 95% t interval of the plan's joint Δloss with
   it (:class:`~trajectory.engine.replaced.HeldoutCost`): a candidate must keep ``U ≤ budget``, and among
   those the one with the smallest increase per FLOP it removes, ``max(U − U_now, 0) / FLOPs removed``, is
   taken (ties: the one that removes more FLOPs).  The upper end, not the mean: on a few dozen held-out
   windows a replacement whose mean Δloss is below 0 is usually noise, and the budget should hold for the
   loss the model will have, not the luck of the windows; an exactly affine block has ``U ≈ 0`` and goes
   first;
4. stop when no candidate fits the budget, or every block is replaced.

The joint Δloss is measured each time with every chosen map in place, never summed from single-block costs.
A budget of 0 asks for no loss at all, so it replaces nothing (a Δloss at or below 0 is within the held-out
noise, not a gain to act on).  At the end the same choices are also fitted on the intact model, every block
at once, and measured: ``joint_intact_fits`` is what sequential fitting is compared against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch.nn as nn

from ..engine.ablation import Ablation, as_module, ffn_cost, fit_map, map_cost, menu, patched
from ..engine.adapters import Adapter
from ..engine.replaced import HeldoutCost
from .fitting import Windows, train_moments
from .spec import CompressConfig


@dataclass
class Choice:
    """One step of the plan: block, ablation, its map's tensors and what the plan costs with it in place."""

    block: int
    ablation: Ablation
    tensors: dict[str, np.ndarray]
    dloss: float
    dloss_high: float
    params_removed: int
    flops_removed: int
    fitted_after: tuple[int, ...] = ()  # the blocks already replaced when this map was fitted


@dataclass
class Plan:
    """The chosen steps in order, and the joint held-out cost of all of them (sequential and intact fits)."""

    choices: list[Choice] = field(default_factory=list)
    joint: dict = field(default_factory=dict)
    joint_intact_fits: dict = field(default_factory=dict)

    def modules(self, model: nn.Module, adapter: Adapter) -> dict[int, nn.Module]:
        blocks = adapter.blocks(model)
        return {c.block: as_module(c.tensors, blocks[c.block]) for c in self.choices}


def plan_menu(d: int, ranks: tuple[int, ...] | None) -> list[Ablation]:
    """The ablations a plan chooses among: those that cost fewer FLOPs than the affine map, and it."""
    affine = map_cost(Ablation("affine"), d, d).flops
    return [a for a in menu(d, ranks) if a.kind == "affine" or map_cost(a, d, d).flops < affine]


def greedy_plan(model, adapter: Adapter, win: Windows, heldout: HeldoutCost, cfg: CompressConfig, device: str) -> Plan:
    """The plan of the module docstring, within ``cfg.budget_dloss``."""
    plan, now = Plan(), 0.0  # now: U of the plan so far (0 for the intact model)
    budget, d = cfg.budget_dloss or 0.0, model.config.hidden_size
    left = list(range(len(adapter.blocks(model))))
    while left and budget > 0:
        step = _best_step(model, adapter, win, heldout, cfg, plan, left, now, budget, device)
        if step is None:
            break
        plan.choices.append(step)
        left.remove(step.block)
        now = step.dloss_high
    with patched(adapter, model, plan.modules(model, adapter)):
        plan.joint = heldout.summary(model)
    plan.joint_intact_fits = _intact_fits(model, adapter, win, heldout, cfg, plan, d, device)
    return plan


def _best_step(model, adapter, win, heldout, cfg, plan: Plan, left, now: float, budget: float, device) -> Choice | None:
    d, blocks, rcond = model.config.hidden_size, adapter.blocks(model), cfg.metric.rcond
    chosen = plan.modules(model, adapter)
    with patched(adapter, model, chosen):
        trains = train_moments(model, adapter, win, cfg.metric.compute_dtype, device)
    best, best_key = None, None
    for i in left:
        full = ffn_cost(adapter, blocks[i])
        for ab in plan_menu(d, cfg.ranks):
            tensors = fit_map(ab, trains[i], rcond)
            saved = full - map_cost(ab, d, d)
            if saved.flops <= 0:  # an FFN narrower than its affine map: replacing it saves nothing
                continue
            with patched(adapter, model, {**chosen, i: as_module(tensors, blocks[i])}):
                dloss, _, high = heldout.interval(model)
            key = (max(high - now, 0.0) / saved.flops, -saved.flops)
            if high <= budget and (best_key is None or key < best_key):
                fitted_after = tuple(c.block for c in plan.choices)
                best = Choice(i, ab, tensors, dloss, high, saved.params, saved.flops, fitted_after)
                best_key = key
    return best


def _intact_fits(model, adapter, win, heldout, cfg, plan: Plan, d: int, device: str) -> dict:
    """The joint cost of the same choices with every map fitted on the intact model (empty for no choice)."""
    if not plan.choices:
        return {}
    trains = train_moments(model, adapter, win, cfg.metric.compute_dtype, device)
    blocks = adapter.blocks(model)
    maps = {
        c.block: as_module(fit_map(c.ablation, trains[c.block], cfg.metric.rcond), blocks[c.block])
        for c in plan.choices
    }
    with patched(adapter, model, maps):
        return heldout.summary(model)
