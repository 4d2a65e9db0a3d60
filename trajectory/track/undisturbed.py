"""Measuring a model in the middle of its training without changing what the training does next.

Inside :func:`undisturbed` every module is in eval mode (no dropout) and autograd is off; on the way out,
whatever happens inside, each module's own ``training`` flag, autograd's enabled state and every random
generator a training step may draw from are put back: torch's CPU generator and each CUDA device's
(:func:`torch.random.fork_rng`), numpy's global generator and Python's ``random``.  Nothing inside
touches a parameter's ``.grad`` (no backward pass runs), so gradient state needs no copy.
"""

from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import torch

from ..engine.measure import evaluating


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


@contextmanager
def undisturbed(model: torch.nn.Module):
    """``model`` in eval mode under ``torch.no_grad``; flags, autograd state and RNG states restored after."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=_cuda_devices()), torch.no_grad(), evaluating(model):
            yield model
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
