"""The moved-but-not-learned null: models ``θ₀ + ε`` with ``ε`` of the trained run's size in no learned direction.

At a measured step ``t`` of a trained seed ``s`` (``[twin.perturbation]``,
:class:`~trajectory.variants.PerturbationSpec`), draw ``k = 0 … K − 1`` builds, for each parameter tensor
``P`` of the model (every ``named_parameters`` entry, head included, in name order),

    ε_k[P] = g · ‖θ_t[P] − θ₀[P]‖_F / ‖g‖_F,    g ~ N(0, I) of P's shape (float32, drawn in float64 scale)

from one ``torch.Generator`` seeded by ``SeedSequence([draw_seed, s, t, k])`` (never the global RNG), and the
model ``θ₀ + ε_k`` (θ₀: the seed's init, :func:`~trajectory.engine.models.fresh_model`).  Each tensor moves
exactly as far as training moved it, in a uniformly random direction.  Measured on the twin's own
evaluation windows, the K draws at each step give the perturbation band (:mod:`trajectory.verdicts.controls`).
Stored as the arm ``twin:perturbation``, seed ``k``, step ``t``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..engine.models import fresh_model


def generator(draw_seed: int, seed: int, step: int, draw: int) -> torch.Generator:
    """The draw's own generator: 63 bits of ``SeedSequence([draw_seed, seed, step, draw])``."""
    words = np.random.SeedSequence([int(draw_seed), int(seed), int(step), int(draw)]).generate_state(2)
    return torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))


@torch.no_grad()
def direction(theta0: dict[str, torch.Tensor], theta_t: dict[str, torch.Tensor], gen: torch.Generator) -> dict:
    """ε per tensor name (module docstring); a tensor training did not move gets ε = 0."""
    out = {}
    for name in sorted(theta0):
        delta = (theta_t[name].detach().double().cpu() - theta0[name].detach().double().cpu()).norm()
        g = torch.randn(theta0[name].shape, generator=gen, dtype=torch.float32)
        norm = g.double().norm()
        out[name] = (g.double() * (delta / norm if norm > 0 else 0.0)).to(theta0[name].dtype)
    return out


@torch.no_grad()
def perturbed_model(run, trained: torch.nn.Module, step: int, draw: int, draw_seed: int, device: str):
    """``θ₀ + ε_draw`` of ``run``'s seed, ε sized by ``trained`` (the run at ``step``), on ``device``, in eval mode."""
    model = fresh_model(run.config, run.seed, with_head=True)
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    theta_t = dict(trained.named_parameters())
    eps = direction(theta0, theta_t, generator(draw_seed, run.seed, step, draw))
    for name, p in model.named_parameters():
        p.add_(eps[name].to(p.device))
    return model.to(device).eval()
