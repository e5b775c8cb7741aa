"""The random-number state of a training worker, saved with each checkpoint so that a resumed run draws the
same dropout masks (and anything else random) as the uninterrupted one: torch's CPU generator, every CUDA
device's generator where present, Python's ``random`` and NumPy's global generator.

Held as tensors, ints and tuples only, so the checkpoint still loads with ``torch.load(weights_only=True)``.
The data order needs no state: it is a function of the step and the seed (``training/batches.py``'s
``batch_indices``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture() -> dict[str, Any]:
    """This process's generators' states."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Set this process's generators to ``state`` (from :func:`capture`)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather(world: int) -> list[dict[str, Any]]:
    """Every worker's state, in rank order (a collective: every rank calls it at the same step)."""
    mine = capture()
    if world == 1:
        return [mine]
    import torch.distributed as dist

    states: list[Any] = [None] * world
    dist.all_gather_object(states, mine)
    return states
