"""The ``register`` section of the run config: where models are registered, and how a challenger may
replace the champion (see ``promotion.py``, ``significance.py``).

    register:
      model_name: fora-smollm2-135m
      metric: heldout/contains     # any metric the evaluate step produces, compared item by item
      promotion_test: auto         # McNemar for 0/1 items, the paired bootstrap for continuous ones
      margin: 0.01                 # the smallest gain (in the metric's units) that may replace the champion
      guards:                      # metrics that must not get worse than the base model's beyond a tolerance
        - {metric: general/perplexity, tolerance: 0.05, relative: true}
        - {metric: boolq/acc, tolerance: 0.02}
      alpha: 0.05
      approval: manual             # only propose (alias challenger); a person runs `fora registry promote`
      artifact: adapter            # merged | adapter | both
      skip_unchanged: scheduled    # skip training on unchanged data: scheduled runs | always | never
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .addresses import check_tracking_uri
from .checks import build_section, check_bool, fail

NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
"""A run or registered-model name: it names folders, checkpoints, MLflow runs and registered models."""


PROMOTION_TESTS = ("auto", "bootstrap", "mcnemar")
"""``register.promotion_test``; ``registry/significance.py`` runs each."""
DEFAULT_METRIC = "acc_avg"
"""``register.metric`` when the config names none: the macro accuracy over the lm-eval tasks."""
APPROVALS = ("auto", "manual")


@dataclass
class Guard:
    """A metric the tuned model must not make worse than the base model's beyond ``tolerance``: for a
    higher-is-better metric m, tuned >= base - t; for a lower-is-better one, tuned <= base + t, where
    t = tolerance (in the metric's units), or tolerance * |base| with ``relative``."""

    metric: str = ""
    tolerance: float = 0.0
    relative: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            fail("register.guards[].metric", self.metric, "a metric the evaluate step produces (boolq/acc, "
                                                          "general/perplexity, heldout/loss, ...)")
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float)) or \
                not 0 <= self.tolerance < float("inf"):
            fail(f"register.guards[{self.metric}].tolerance", self.tolerance, "a finite number >= 0")
        check_bool(f"register.guards[{self.metric}].relative", self.relative)

    def describe(self) -> str:
        return f"{self.metric} no worse than the base by {self.tolerance:g}{' (relative)' if self.relative else ''}"


@dataclass
class RegisterConfig:
    model_name: str = "fora-model"
    metric: str = DEFAULT_METRIC
    """What the champion and the challenger are compared on, item by item: any metric the evaluate step
    produces (acc_avg, acc_norm_avg, <task>/<metric>, heldout/loss, heldout/<scorer>; see
    ``evaluation/metrics.py``), its direction known (lower is better for losses and perplexities)."""
    tracking_uri: str = ""
    """MLflow tracking URI (default: sqlite:///<output_dir>/mlflow.db)."""
    experiment: str = "fora"
    compare_champion: bool = True
    """The evaluate step scores the current champion on the same items (needed for a paired promotion)."""
    promotion_test: str = "auto"
    """auto: McNemar for 0/1 per-item scores, the bootstrap for continuous ones; bootstrap: the paired
    bootstrap's one-sided lower bound of the gain must exceed ``margin``; mcnemar: McNemar's exact one-sided
    p < ``alpha`` and a gain of at least ``margin`` (0/1 scores only)."""
    margin: float = 0.0
    """The smallest gain that may replace the champion, in the metric's units (accuracy: 0.01 = one point)."""
    guards: list[Guard] = field(default_factory=list)
    """Metrics that must not get worse than the base model's beyond a tolerance; a challenger that breaks one
    is kept out, and the decision names the guard."""
    alpha: float = 0.05
    """The test's level: 1 - alpha is the confidence that the challenger is better."""
    approval: str = "auto"
    """auto: a winning challenger becomes ``champion``; manual: it becomes ``challenger`` and a person
    promotes it (``fora registry promote``)."""
    artifact: str = "merged"
    """What the registered version holds: merged (a plain transformers model, loads anywhere), adapter (the
    PEFT adapter and the name of its base model: megabytes instead of the model's size; loads with the same
    ``mlflow.pyfunc.load_model`` call, which fetches the base) or both (merged registered, adapter beside).
    A version that breaks a guard can never be promoted: it is registered in the adapter form whatever this says
    (its tag ``artifact`` says which form it holds)."""
    skip_unchanged: str = "scheduled"
    """Skip training when the champion was trained on the same data fingerprint and settings: scheduled
    (recurring runs only), always, never."""

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not NAME.match(self.model_name) or ".." in self.model_name:
            fail("register.model_name", self.model_name, "1-64 letters, digits, '.', '_' or '-'")
        if not isinstance(self.metric, str) or not self.metric:
            fail("register.metric", self.metric, "a metric the evaluate step produces (acc_avg, boolq/acc, "
                                                 "heldout/loss, heldout/contains, ...)")
        check_tracking_uri(self.tracking_uri)
        if not isinstance(self.experiment, str) or not self.experiment:
            fail("register.experiment", self.experiment, "a non-empty name")
        check_bool("register.compare_champion", self.compare_champion)
        if self.promotion_test not in PROMOTION_TESTS:
            fail("register.promotion_test", self.promotion_test, ", ".join(PROMOTION_TESTS))
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) or \
                not 0 <= self.margin < float("inf"):
            fail("register.margin", self.margin, "a finite number >= 0 (in the metric's units)")
        if not isinstance(self.guards, list):
            fail("register.guards", self.guards, "a list of {metric, tolerance, relative}")
        self.guards = [build_section(Guard, g, f"register.guards[{i}]") for i, g in enumerate(self.guards)]
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 0.5:
            fail("register.alpha", self.alpha, "a number in (0, 0.5)")
        if self.approval not in APPROVALS:
            fail("register.approval", self.approval, ", ".join(APPROVALS))
        if self.artifact not in ("merged", "adapter", "both"):
            fail("register.artifact", self.artifact, "merged, adapter, both")
        if self.skip_unchanged not in ("scheduled", "always", "never"):
            fail("register.skip_unchanged", self.skip_unchanged, "scheduled, always, never")
