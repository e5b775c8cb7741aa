"""The ``ablation`` section of the run config: what ``fora ablate`` compares and how hard it searches.

    ablation:
      methods: [lora, fg-lora, stiefel-lora, fora]
      lr: [2.0e-4, 6.0e-4, 2.0e-3]      # AdamW lr grid, every method
      stiefel_lr: [3.0e-3, 3.0e-2, 0.3]  # Cayley-Adam lr grid, the Stiefel methods only
      seeds: [0, 1, 2]                   # the best setting of each method, once per seed
      layer_budgets: [0.25, 0.5, 0.75, 1.0]   # K-sensitivity of fora and fg-lora at their tuned lrs

Every method gets the same data, step budget (``train.max_steps``) and validation split; K for the search
and the seeds is ``fora.layer_budget``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fora_core import METHODS

from .checks import fail

DEFAULT_METHODS = ["fora", "fg-lora", "stiefel-lora", "lora"]
"""The four-way ablation of FoRA's two parts; any method of fora_core/methods.py may be listed."""


def _positive_list(name: str, value: Any) -> None:
    if not isinstance(value, list) or not value:
        fail(name, value, "a non-empty list of numbers > 0")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            fail(name, value, "a non-empty list of numbers > 0")


@dataclass
class AblationConfig:
    methods: list = field(default_factory=lambda: list(DEFAULT_METHODS))
    lr: list = field(default_factory=lambda: [2e-4, 6e-4, 2e-3])
    """AdamW learning rates searched for every method."""
    stiefel_lr: list = field(default_factory=lambda: [3e-3, 3e-2, 3e-1])
    """Cayley-Adam learning rates searched for the Stiefel methods (a grid with ``lr``)."""
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    layer_budgets: list = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    """K values of the K-sensitivity curves (fora and fg-lora, at their tuned learning rates)."""
    eval_limit: int = 0
    """Items per task when scoring the seeds' adapters (0: eval.limit)."""
    max_trials: int = 64
    """The budget: the ablation refuses to start when search + seeds + K curves exceed it."""

    def __post_init__(self) -> None:
        if not isinstance(self.methods, list) or not self.methods:
            fail("ablation.methods", self.methods, "a non-empty list of " + ", ".join(METHODS))
        for m in self.methods:
            if m not in METHODS:
                fail("ablation.methods", m, ", ".join(METHODS))
        if len(set(self.methods)) != len(self.methods):
            fail("ablation.methods", self.methods, "each method once")
        _positive_list("ablation.lr", self.lr)
        _positive_list("ablation.stiefel_lr", self.stiefel_lr)
        if not isinstance(self.seeds, list) or not self.seeds or len(set(self.seeds)) != len(self.seeds) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds):
            fail("ablation.seeds", self.seeds, "a non-empty list of distinct integers >= 0")
        if not isinstance(self.layer_budgets, list):
            fail("ablation.layer_budgets", self.layer_budgets, "a list of K values (integers or fractions)")
        for k in self.layer_budgets:
            ok = (isinstance(k, int) and not isinstance(k, bool) and k >= 1) or (isinstance(k, float) and 0 < k <= 1)
            if not ok:
                fail("ablation.layer_budgets", k, "integers 1..L (layers) or fractions in (0, 1]")
        for name in ("eval_limit", "max_trials"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "eval_limit" else 1):
                fail(f"ablation.{name}", v, f"an integer >= {0 if name == 'eval_limit' else 1}")
