"""The ``ablation`` section of the run config: what ``fora ablate`` compares and how hard it searches.

    ablation:
      methods: [lora, fg-lora, stiefel-lora, fora, fg-lora-orth, fora-frozen-b]
      lr: [5.0e-4, 1.0e-3, 2.0e-3]      # the initial AdamW lr grid, every method (neighbours at most x step apart)
      stiefel_lr: [0.15, 0.3]            # the initial Cayley-Adam lr grid, the Stiefel methods only
      trials_per_method: 5              # every method's search budget: the initial grid, then edges / refinement
      search_seed: 100                  # the search's seed, never one of the reported seeds
      seeds: [0, 1, 2]                  # the best setting of each method, once per seed, scored on the report split
      report_rows: 400                  # the held-out report split, apart from the selection split
      layer_budgets: [0.25, 0.5, 1.0]   # K-sensitivity of k_curve_methods at their tuned lrs
      k_curve_seeds: 2                  # ... on the first 2 seeds (0: all)

Every method gets the same data, step budget (``train.max_steps``) and selection split (``data.max_validation``
rows); K for the search and the seeds is ``fora.layer_budget``. Selection and report never share rows or seeds
(``pipelines/ablation/search_plan.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fora_core import METHODS

from .checks import fail

DEFAULT_METHODS = ["fora", "fg-lora", "stiefel-lora", "lora", "fg-lora-orth", "fora-frozen-b"]
"""FoRA's two parts (selection, manifold) and the two mechanism arms; any method of fora_core/methods.py may be listed."""


def _positive_list(name: str, value: Any) -> None:
    if not isinstance(value, list) or not value:
        fail(name, value, "a non-empty list of numbers > 0")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            fail(name, value, "a non-empty list of numbers > 0")


def _fine_grid(name: str, values: list, step: float) -> None:
    """Neighbouring values of an initial grid at most ``step`` apart, so the search can bracket an optimum."""
    ordered = sorted(values)
    for lo, hi in zip(ordered, ordered[1:], strict=False):
        if hi / lo > step * (1 + 1e-6):
            fail(name, values, f"neighbouring values at most x{step:g} apart (ablation.step): {lo:g} -> {hi:g} is "
                 f"x{hi / lo:.3g}; add values between them")


@dataclass
class AblationConfig:
    methods: list = field(default_factory=lambda: list(DEFAULT_METHODS))
    lr: list = field(default_factory=lambda: [5e-4, 1e-3, 2e-3])
    """The initial AdamW learning-rate grid of every method's search."""
    stiefel_lr: list = field(default_factory=lambda: [0.15, 0.3])
    """The initial Cayley-Adam learning-rate grid of the Stiefel methods (crossed with ``lr``)."""
    step: float = 2.0
    """The grid's ratio: neighbouring initial values at most this far apart, and an edge extends by it."""
    trials_per_method: int = 0
    """Search trials of every method, equal for all (0: the largest initial design, plus 2)."""
    search_seed: int = 100
    """The seed of every search trial; the reported seeds must differ from it."""
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    """Seeds of each method's best setting, scored on the report split."""
    report_rows: int = 400
    """Rows of the held-out report split (from the same source, apart from train, selection and calibration)."""
    layer_budgets: list = field(default_factory=lambda: [0.25, 0.5, 1.0])
    """K values of the K-sensitivity curves (``k_curve_methods`` at their tuned learning rates, every seed)."""
    k_curve_methods: list = field(default_factory=lambda: ["fora", "fg-lora"])
    """The methods whose K curves are drawn (those of them in ``methods`` with Fisher selection)."""
    k_curve_seeds: int = 0
    """How many of ``seeds`` (the first ones) each K-curve point runs on (0: all)."""
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
        ok_step = isinstance(self.step, (int, float)) and not isinstance(self.step, bool) and 1.0 < self.step <= 2.0
        if not ok_step:
            fail("ablation.step", self.step, "a number in (1, 2]: x2 or finer")
        for name in ("lr", "stiefel_lr"):
            _positive_list(f"ablation.{name}", getattr(self, name))
            _fine_grid(f"ablation.{name}", getattr(self, name), float(self.step))
        if not isinstance(self.k_curve_methods, list) or any(m not in METHODS for m in self.k_curve_methods):
            fail("ablation.k_curve_methods", self.k_curve_methods, "a list of " + ", ".join(METHODS))
        if not isinstance(self.seeds, list) or not self.seeds or len(set(self.seeds)) != len(self.seeds) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds):
            fail("ablation.seeds", self.seeds, "a non-empty list of distinct integers >= 0")
        if not isinstance(self.layer_budgets, list):
            fail("ablation.layer_budgets", self.layer_budgets, "a list of K values (integers or fractions)")
        for k in self.layer_budgets:
            ok = (isinstance(k, int) and not isinstance(k, bool) and k >= 1) or (isinstance(k, float) and 0 < k <= 1)
            if not ok:
                fail("ablation.layer_budgets", k, "integers 1..L (layers) or fractions in (0, 1]")
        for name, least in (("eval_limit", 0), ("max_trials", 1), ("trials_per_method", 0), ("search_seed", 0), ("k_curve_seeds", 0),
                            ("report_rows", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                fail(f"ablation.{name}", v, f"an integer >= {least}")
        if self.search_seed in self.seeds:
            fail("ablation.search_seed", self.search_seed, f"a seed not in ablation.seeds {self.seeds}: the search "
                 "picks each method's setting and the report must not re-use its seed")

    def budget(self) -> int:
        """Search trials per method: ``trials_per_method``, or the largest initial design plus 2."""
        from fora_core import STIEFEL_METHODS

        largest = max(len(self.lr) * (len(self.stiefel_lr) if m in STIEFEL_METHODS else 1) for m in self.methods)
        return self.trials_per_method or largest + 2
