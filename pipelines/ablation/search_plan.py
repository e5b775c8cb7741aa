"""The ablation's learning-rate search at an equal budget per method, with the grid's edges checked.

Every method gets exactly ``ablation.trials_per_method`` search trials, all on the search seed and judged on
the selection split only. It starts from an initial design, ``ablation.lr`` for the AdamW-only methods and the
grid ``ablation.lr x ablation.stiefel_lr`` for the Stiefel methods, and spends the rest of its budget in rounds,
one proposal per method per round (``next_point``):

1. **edge**: along each axis (the axes taking turns by round: lr first in even rounds, stiefel_lr first in odd
   ones, so a 2-D search varies both), if the best point's value is the largest value tried on that axis, the
   next is best x step (the other axis held at the best's value); if the smallest, best / step; an axis tried
   at one value is on both edges (x step first). A method whose best sits on an edge gets the next value
   automatically, so an optimum beyond the initial grid is found, not assumed.
2. **refine**: otherwise the geometric midpoint between the best and its nearer-in-loss neighbour on that
   line (x sqrt(step) spacing, then finer), alternating the axes for the Stiefel methods.

A diverged trial counts as an infinitely bad loss (the search never extends towards it). A round's proposals
depend only on the finished rounds' losses, so a resumed ablation proposes the same trials again.
"""

from __future__ import annotations

import math
from typing import Any

from fora_core import STIEFEL_METHODS

AXES = ("lr", "stiefel_lr")


def axes_of(method: str) -> tuple[str, ...]:
    """The learning rates a method's search tunes: AdamW's lr, and Cayley-Adam's for the Stiefel methods."""
    return AXES if method in STIEFEL_METHODS else ("lr",)


def _key(v: float) -> float:
    """Values compared at 6 significant digits (x step then / step must land on the same point)."""
    return float(f"{v:.6g}")


def initial_design(method: str, lr: list[float], stiefel_lr: list[float], default_stiefel_lr: float) -> list[dict]:
    """The first round of a method: {"lr", "stiefel_lr"} per trial."""
    if method in STIEFEL_METHODS:
        return [{"lr": _key(a), "stiefel_lr": _key(s)} for a in lr for s in stiefel_lr]
    return [{"lr": _key(a), "stiefel_lr": _key(default_stiefel_lr)} for a in lr]


def _loss(point: dict) -> float:
    v = point.get("val_loss")
    return math.inf if point.get("status") == "diverged" or v is None or not math.isfinite(v) else float(v)


def best_point(tried: list[dict]) -> dict | None:
    """The tried point with the lowest selection loss (ties: the earlier one); None when none finished."""
    finite = [p for p in tried if math.isfinite(_loss(p))]
    return min(finite, key=_loss) if finite else None


def _line(tried: list[dict], best: dict, axis: str, axes: tuple[str, ...]) -> list[dict]:
    """The tried points on the line through ``best`` along ``axis`` (every other axis at best's value)."""
    return [p for p in tried if all(_key(p[a]) == _key(best[a]) for a in axes if a != axis)]


def next_point(method: str, tried: list[dict], step: float, round_index: int) -> dict[str, Any] | None:
    """The next trial of a method's search, from its tried points ({"lr", "stiefel_lr", "val_loss", "status"}):
    an edge extension where the best is on an edge, else a refinement (module doc). None when nothing finished."""
    axes = axes_of(method)
    best = best_point(tried)
    if best is None:
        return None
    seen = {tuple(_key(p[a]) for a in AXES) for p in tried}

    def new(axis: str, value: float) -> dict | None:
        point = {a: _key(best[a]) for a in AXES} | {axis: _key(value)}
        return point if tuple(point[a] for a in AXES) not in seen else None

    order = axes[round_index % len(axes):] + axes[: round_index % len(axes)]
    for axis in order:  # 1. edges, the axes taking turns by round (an axis tried at one value is on both edges)
        values = sorted(_key(p[axis]) for p in tried)  # every value tried on this axis, whatever the other's
        b = _key(best[axis])
        for candidate in ([b * step] if b == values[-1] else []) + ([b / step] if b == values[0] else []):
            if (point := new(axis, candidate)) is not None:
                return point
    for axis in order:  # 2. refinement next to the best, on the side of its better neighbour first
        line = _line(tried, best, axis, axes)
        b = _key(best[axis])
        below = [p for p in line if _key(p[axis]) < b]
        above = [p for p in line if _key(p[axis]) > b]
        sides = [max(below, key=lambda p: p[axis])] if below else []
        sides += [min(above, key=lambda p: p[axis])] if above else []
        for neighbour in sorted(sides, key=_loss):
            if (point := new(axis, math.sqrt(b * _key(neighbour[axis])))) is not None:
                return point
    return None


def propose_round(tried_by_method: dict[str, list[dict]], budget: int, step: float,
                  round_index: int) -> list[dict[str, Any]]:
    """One round's trials: one per method still under ``budget`` ({"method", "lr", "stiefel_lr"})."""
    out = []
    for method, tried in tried_by_method.items():
        if len(tried) >= budget:
            continue
        point = next_point(method, tried, step, round_index)
        if point is not None:
            out.append({"method": method, **point})
    return out
