"""Choose the K decoder layers that get adapters (paper Eq. 3), plus ablation strategies."""

from __future__ import annotations

import random
from collections.abc import Sequence

from .config import ForaConfigError, resolve_layer_budget
from .fisher import FisherReport

STRATEGIES = ("fisher", "random", "first", "last", "all")


def select_layers(
    report_or_scores: FisherReport | Sequence[float] | int,
    k: int | float,
    strategy: str = "fisher",
    seed: int = 0,
) -> list[int]:
    """Return the sorted indices of the layers to adapt.

    Args:
        report_or_scores: a FisherReport, a sequence of per-layer scores F_l, or (for strategies that need
            no scores) the number of layers L.
        k: the layer budget: an int count or a fraction of L in (0, 1].
        strategy: 'fisher' (top-K by F_l, ties broken by lower index), 'random' (seeded), 'first', 'last',
            or 'all'.
    """
    if strategy not in STRATEGIES:
        raise ForaConfigError(f"invalid value for 'strategy': {strategy!r} (allowed: {', '.join(STRATEGIES)})")
    if isinstance(report_or_scores, FisherReport):
        scores: list[float] | None = list(report_or_scores.scores)
    elif isinstance(report_or_scores, int):
        scores = None
    else:
        scores = [float(s) for s in report_or_scores]
    num_layers = len(scores) if scores is not None else int(report_or_scores)  # type: ignore[arg-type]
    if num_layers < 1:
        raise ForaConfigError("select_layers needs at least one layer")
    if strategy == "all":
        return list(range(num_layers))
    n = resolve_layer_budget(k, num_layers)
    if strategy == "fisher":
        if scores is None:
            raise ForaConfigError("strategy 'fisher' needs Fisher scores (a FisherReport or a list of F_l)")
        order = sorted(range(num_layers), key=lambda i: (-scores[i], i))
        return sorted(order[:n])
    if strategy == "first":
        return list(range(n))
    if strategy == "last":
        return list(range(num_layers - n, num_layers))
    return sorted(random.Random(seed).sample(range(num_layers), n))
