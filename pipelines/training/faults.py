"""Test-only step hooks: a failure, a non-finite loss or a climbing loss from a chosen step, to prove that a worker
failure resumes from the last checkpoint, that divergence stops the run before anything is kept, and that the
checkpoint choice keeps the better step and stops early.

A hook is passed to ``run_training(..., hooks=[...])`` (``LoopConfig.hooks``), never through the run config, so
no user setting can inject a fault. Hooks are small dataclasses of this package: Ray pickles them to workers on
any node by reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StepHook(Protocol):
    def before_step(self, step: int, resumed: bool) -> None: ...

    def on_loss(self, step: int, loss):  # a torch scalar in, a torch scalar out
        ...


@dataclass(frozen=True)
class FailAt:
    """Raise at ``step`` (0-based) of a run that did not resume: a worker failure Ray Train recovers from."""

    step: int

    def before_step(self, step: int, resumed: bool) -> None:
        if step == self.step and not resumed:
            raise RuntimeError(f"injected failure at step {step}")

    def on_loss(self, step: int, loss):
        return loss


@dataclass(frozen=True)
class NaNLossAt:
    """Make the loss of ``step`` (0-based) non-finite: the divergence check must stop the run there."""

    step: int

    def before_step(self, step: int, resumed: bool) -> None:
        return None

    def on_loss(self, step: int, loss):
        return loss * float("nan") if step == self.step else loss


@dataclass(frozen=True)
class AscendFrom:
    """From ``step`` (0-based) on, climb the loss instead of descending it (the gradient of -loss): the model gets
    worse on purpose, so the checkpoint choice must keep an earlier step and early stopping must fire."""

    step: int

    def before_step(self, step: int, resumed: bool) -> None:
        return None

    def on_loss(self, step: int, loss):
        return -loss if step >= self.step else loss
