"""The ``register`` section of the run config: where models are registered, and how a challenger may
replace the champion (see ``promotion.py``, ``paired_test.py``).

    register:
      model_name: fora-smollm2-135m
      metric: acc_avg              # compared item by item (acc), or acc_norm_avg
      promotion_test: mcnemar      # or bootstrap
      margin: 0.01                 # the smallest gain that may replace the champion
      alpha: 0.05
      approval: manual             # only propose (alias challenger); a person runs `fora registry promote`
      artifact: adapter            # merged | adapter | both
      skip_unchanged: scheduled    # skip training on unchanged data: scheduled runs | always | never
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .checks import check_bool, fail

NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
"""A run or registered-model name: it names folders, checkpoints, MLflow runs and registered models."""


REGISTER_METRICS = ("acc_avg", "acc_norm_avg")
PROMOTION_TESTS = ("bootstrap", "mcnemar")
APPROVALS = ("auto", "manual")


@dataclass
class RegisterConfig:
    model_name: str = "fora-model"
    metric: str = "acc_avg"
    """What the champion and the challenger are compared on, item by item: acc_avg (acc) or acc_norm_avg."""
    tracking_uri: str = ""
    """MLflow tracking URI (default: sqlite:///<output_dir>/mlflow.db)."""
    experiment: str = "fora"
    compare_champion: bool = True
    """The evaluate step scores the current champion on the same items (needed for a paired promotion)."""
    promotion_test: str = "bootstrap"
    """bootstrap: the paired bootstrap's one-sided lower bound of the gain must exceed ``margin``;
    mcnemar: McNemar's exact one-sided p < ``alpha`` and a gain of at least ``margin``."""
    margin: float = 0.0
    """The smallest gain in accuracy (a fraction: 0.01 = one point) that may replace the champion."""
    alpha: float = 0.05
    """The test's level: 1 - alpha is the confidence that the challenger is better."""
    approval: str = "auto"
    """auto: a winning challenger becomes ``champion``; manual: it becomes ``challenger`` and a person
    promotes it (``fora registry promote``)."""
    artifact: str = "merged"
    """What the registered version holds: merged (a plain transformers model, loads anywhere), adapter (the
    PEFT adapter and the name of its base model: megabytes instead of the model's size; loads with the same
    ``mlflow.pyfunc.load_model`` call, which fetches the base) or both (merged registered, adapter beside)."""
    skip_unchanged: str = "scheduled"
    """Skip training when the champion was trained on the same data fingerprint and settings: scheduled
    (recurring runs only), always, never."""

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not NAME.match(self.model_name) or ".." in self.model_name:
            fail("register.model_name", self.model_name, "1-64 letters, digits, '.', '_' or '-'")
        if self.metric not in REGISTER_METRICS:
            fail("register.metric", self.metric, ", ".join(REGISTER_METRICS))
        if not isinstance(self.tracking_uri, str):
            fail("register.tracking_uri", self.tracking_uri, "'' (SQLite under output_dir) or an MLflow URI")
        if not isinstance(self.experiment, str) or not self.experiment:
            fail("register.experiment", self.experiment, "a non-empty name")
        check_bool("register.compare_champion", self.compare_champion)
        if self.promotion_test not in PROMOTION_TESTS:
            fail("register.promotion_test", self.promotion_test, ", ".join(PROMOTION_TESTS))
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) or not 0 <= self.margin < 1:
            fail("register.margin", self.margin, "a number in [0, 1)")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 0.5:
            fail("register.alpha", self.alpha, "a number in (0, 0.5)")
        if self.approval not in APPROVALS:
            fail("register.approval", self.approval, ", ".join(APPROVALS))
        if self.artifact not in ("merged", "adapter", "both"):
            fail("register.artifact", self.artifact, "merged, adapter, both")
        if self.skip_unchanged not in ("scheduled", "always", "never"):
            fail("register.skip_unchanged", self.skip_unchanged, "scheduled, always, never")
