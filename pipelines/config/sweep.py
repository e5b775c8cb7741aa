"""The ``sweep:`` section of the run config: the search space of ``fora sweep`` (K, learning rates, methods),
its budget and its scheduler. The sweep itself is ``pipelines/sweep/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fora_core import METHODS

from .checks import check_int, check_number, fail
from .errors import RunConfigError

SCHEDULERS = ("asha", "median", "fifo")


SWEEP_METHODS = METHODS  # every method of fora_core/methods.py


SPACE_KINDS = ("grid", "choice", "loguniform", "uniform")


def _space(name: str, value: Any) -> dict[str, list]:
    """A search space: a list (grid over it) or {grid|choice: [...]} or {loguniform|uniform: [low, high]}."""
    if isinstance(value, list):
        value = {"grid": value}
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in SPACE_KINDS:
        fail(name, value, "a list of values, or one of {grid: [...]}, {choice: [...]}, "
                           "{loguniform: [low, high]}, {uniform: [low, high]}")
    kind, items = next(iter(value.items()))
    if not isinstance(items, list) or not items:
        raise RunConfigError(f"invalid value for '{name}': the search space is empty (give at least one value)")
    for v in items:
        check_number(name, v)
    if kind in ("loguniform", "uniform") and (len(items) != 2 or not items[0] < items[1]):
        fail(name, value, f"{kind}: [low, high] with 0 < low < high")
    return {kind: items}


@dataclass
class SweepConfig:
    """A Ray Tune sweep over the layer budget K, the learning rates and (optionally) the method.

    Data prep and the Fisher pass run once; every trial selects its top-K layers from the same report.
    Methods without Fisher selection (stiefel-lora, lora) use all layers and get one trial per lr setting.
    """

    layer_budgets: list = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    """K values, each an integer 1..L or a fraction in (0, 1]; a grid dimension."""
    methods: list = field(default_factory=lambda: ["fora"])
    lr: Any = field(default_factory=lambda: [2e-4])
    """Search space of the AdamW learning rate (factor A; every factor for lora/fg-lora)."""
    stiefel_lr: Any = field(default_factory=lambda: [0.3])
    num_samples: int = 1
    """Samples per grid point (random spaces: choice, loguniform, uniform)."""
    max_trials: int = 16
    """The budget: the sweep refuses to start if the grid times num_samples exceeds it."""
    scheduler: str = "asha"
    grace_period: int = 0
    """ASHA/median: steps before a trial can be stopped (0: train.eval_every)."""
    reduction_factor: int = 2
    metric: str = "val_loss"
    mode: str = "min"
    max_concurrent: int = 0
    """Trials at once (0: as many as the cluster's CPUs hold, at train.cpus_per_worker per worker)."""
    register_best: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.layer_budgets, list) or not self.layer_budgets:
            raise RunConfigError("invalid value for 'sweep.layer_budgets': the search space is empty "
                                 "(give at least one K)")
        for k in self.layer_budgets:
            ok = (isinstance(k, int) and not isinstance(k, bool) and k >= 1) or (isinstance(k, float) and 0 < k <= 1)
            if not ok:
                fail("sweep.layer_budgets", k, "integers 1..L (layers) or fractions in (0, 1]")
        if not isinstance(self.methods, list) or not self.methods:
            raise RunConfigError("invalid value for 'sweep.methods': the search space is empty")
        for m in self.methods:
            if m not in SWEEP_METHODS:
                fail("sweep.methods", m, ", ".join(SWEEP_METHODS))
        self.lr = _space("sweep.lr", self.lr)
        self.stiefel_lr = _space("sweep.stiefel_lr", self.stiefel_lr)
        check_int("sweep.num_samples", self.num_samples, 1)
        check_int("sweep.max_trials", self.max_trials, 1)
        check_int("sweep.grace_period", self.grace_period, 0)
        check_int("sweep.reduction_factor", self.reduction_factor, 2)
        check_int("sweep.max_concurrent", self.max_concurrent, 0)
        if self.scheduler not in SCHEDULERS:
            fail("sweep.scheduler", self.scheduler, ", ".join(SCHEDULERS))
        if self.metric not in ("val_loss", "loss"):
            fail("sweep.metric", self.metric, "val_loss, loss")
        if self.mode not in ("min", "max"):
            fail("sweep.mode", self.mode, "min, max")
