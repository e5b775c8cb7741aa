"""Which checkpoint the run keeps: the one that learned the task **and** held the guards, chosen while training.

At every evaluation point (``train.eval_every`` and the last step) the loop measures what is cheap to measure
during training and is what ``register.guards`` will judge after it:

* ``heldout/loss``: the validation loss (mean cross-entropy of the response tokens; the base value is the same
  loss with the adapters disabled, measured once before the first step);
* ``general/perplexity``: base and tuned on the first ``eval.general_tokens`` tokens of ``eval.general_text``
  (the same windows the evaluate step scores, ``evaluation/general_text.py``), from one pair of forward passes
  (:func:`fora_core.text_drift`), which also give the KL drift from the base (measured and plotted, not a guard:
  the register step has no base value for it).

An evaluation point is *eligible* when every guard of ``register.guards`` on one of those metrics holds
(``registry/guards.py``, the same rule the register step applies). With ``train.choose_checkpoint: best`` the
run keeps the eligible point with the lowest validation loss (the proxy of the task metric: held-out answers are
generated only after training); ``last`` keeps the last step, as before. With
``train.early_stopping_patience: p > 0`` the run stops once p evaluation points in a row brought no new best
(the guards broke, or the loss stopped improving), like Hugging Face's ``EarlyStoppingCallback``.

Guards on other metrics (an lm-eval task's accuracy) cannot be measured cheaply here; the choice says which
guards it applied and the register step judges all of them after evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..config.register import Guard
from ..config.run_config import RunConfig
from ..registry.guards import broken_guards
from ..runtime.checkpoints import CHOICE_GUARD_METRICS

MEASURED = dict(zip(CHOICE_GUARD_METRICS, ("val_loss", "general_perplexity"), strict=True))
"""The guard metrics measured at each evaluation point, and their key in the step's metrics (history)."""
CHOICE_FILE = "checkpoint_choice.json"
"""Written into the adapter folder: which step the adapter is, why, and every evaluation point."""
BEST_ADAPTER_DIR = "best_adapter"
"""In a checkpoint folder: the adapter of the best evaluation point so far (``choose_checkpoint: best``)."""


def guards_in_training(run: RunConfig) -> list[Guard]:
    """The ``register.guards`` measured during training."""
    return [g for g in run.register.guards if g.metric in MEASURED]


@torch.no_grad()
def general_text_drift(peft_model, windows: torch.Tensor, batch_size: int = 4) -> dict[str, float]:
    """Base and tuned perplexity and the mean KL(base || tuned) per token over ``windows`` (n, T).

    perplexity = exp(sum of next-token NLL / tokens); kl_drift = sum of per-token KL / tokens."""
    from ..evaluation.general_text import measure

    d = measure(peft_model, windows, batch_size)
    n = max(1, d.tokens)
    return {"general_perplexity": math.exp(d.nll_tuned / n), "base_general_perplexity": math.exp(d.nll_base / n),
            "kl_drift": d.kl / n}


@dataclass
class Choice:
    """The evaluation points seen so far and the best eligible one.

    ``points``: one dict per evaluation point, the step's metrics (``step``, ``val_loss``, and where measured
    ``general_perplexity``, ``kl_drift``) plus ``broken`` (the guards it breaks, as the register step words them).
    ``base``: the base model's values of the guard metrics (``heldout/loss``, ``general/perplexity``)."""

    rule: str
    guards: list[Guard]
    patience: int
    base: dict[str, float] = field(default_factory=dict)
    points: list[dict] = field(default_factory=list)
    best_step: int | None = None
    since_best: int = 0

    @staticmethod
    def for_run(run: RunConfig) -> Choice:
        return Choice(run.train.choose_checkpoint, guards_in_training(run), run.train.early_stopping_patience)

    def consider(self, metrics: dict) -> bool:
        """Add one evaluation point (a step's metrics with ``val_loss``); True when it is the new best."""
        measured = {m: metrics[key] for m, key in MEASURED.items() if key in metrics}
        applicable = [g for g in self.guards if g.metric in measured and g.metric in self.base]
        broken = broken_guards(applicable, measured, self.base, {})
        point = {"step": metrics["step"], "val_loss": metrics["val_loss"], "broken": broken,
                 **{key: metrics[key] for key in ("general_perplexity", "kl_drift") if key in metrics}}
        self.points.append(point)
        best = self.best_point()
        if not broken and (best is None or point["val_loss"] < best["val_loss"]):
            self.best_step, self.since_best = point["step"], 0
            return True
        self.since_best += 1
        return False

    def best_point(self) -> dict | None:
        return next((p for p in self.points if p["step"] == self.best_step), None)

    def should_stop(self) -> bool:
        """``patience`` evaluation points in a row without a new best."""
        return self.patience > 0 and self.since_best >= self.patience

    @staticmethod
    def replay(run: RunConfig, history: list[dict]) -> Choice:
        """The choice of a resumed run, rebuilt from its history (the same points in the same order)."""
        choice = Choice.for_run(run)
        for h in history:
            if "base_val_loss" in h and not choice.base:
                choice.base = base_values(h)
            if "val_loss" in h:
                choice.consider(h)
        return choice

    def summary(self, last_step: int, max_steps: int, stopped_early: bool) -> dict:
        """What ``checkpoint_choice.json`` holds: the rule, the chosen step, why, and every point."""
        best = self.best_point() if self.rule == "best" else None
        chosen = best["step"] if best else last_step
        applied = ", ".join(g.describe() for g in self.guards) or "none"
        if self.rule == "best" and best:
            why = (f"step {chosen} of {last_step}: the lowest validation loss ({best['val_loss']:.4g}) among the "
                   f"evaluation points that hold the guards measured in training ({applied})")
        elif self.rule == "best":
            why = (f"step {chosen} (the last): no evaluation point held the guards measured in training ({applied}); "
                   "the register step will keep it out")
        else:
            why = f"step {chosen}: the last step (train.choose_checkpoint: last)"
        if stopped_early:
            why += (f"; training stopped early at step {last_step} of {max_steps}: {self.since_best} evaluation "
                    f"points without a better eligible one (train.early_stopping_patience: {self.patience})")
        return {"rule": self.rule, "chosen_step": chosen, "last_step": last_step, "max_steps": max_steps,
                "stopped_early": stopped_early, "reason": why, "guards": [g.describe() for g in self.guards],
                "guard_specs": [{"metric": g.metric, "tolerance": g.tolerance, "relative": g.relative}
                                for g in self.guards],
                "base": self.base, "points": self.points}


def base_values(metrics: dict) -> dict[str, float]:
    """The base model's guard values carried on the first evaluation point's metrics."""
    base = {"heldout/loss": metrics["base_val_loss"]}
    if "base_general_perplexity" in metrics:
        base["general/perplexity"] = metrics["base_general_perplexity"]
    return base
