"""The guard metrics measured at each evaluation point of a training run (``checkpoint_choice.py`` says why).

Added to the step's metrics (so to ``history.json``, the loss curve and MLflow's ``train/`` metrics):

* ``base_val_loss``: the validation loss with the adapters disabled, at the first evaluation point only;
* ``general_perplexity``, ``base_general_perplexity``, ``kl_drift``: base and tuned on the first
  ``eval.general_tokens`` tokens of ``eval.general_text``, when it is on (``eval.general_text`` not ``""`` and
  ``eval.diagnostics``).

A sweep trial (``where: tune``) measures none of them: its trials are compared on the validation loss alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fora_core import save_adapter

from .checkpoint_choice import BEST_ADAPTER_DIR, Choice, base_values, general_text_drift
from .loop_config import LoopConfig
from .setup import Parts
from .validation import validation_loss


@dataclass
class GuardMeasures:
    parts: Parts
    scratch: Path
    enabled: bool
    windows: torch.Tensor | None

    @staticmethod
    def for_loop(loop: LoopConfig, parts: Parts, scratch: Path) -> GuardMeasures:
        e = loop.run.eval
        enabled = loop.where != "tune"
        windows = None
        if enabled and e.general_text and e.diagnostics:
            from ..evaluation.general_text import load_general_text, token_windows

            loaded = load_general_text(e.general_text)
            if loaded is not None:
                windows = token_windows(parts.tokenizer, loaded[0], e.general_tokens)
        return GuardMeasures(parts, scratch, enabled, windows)

    def add_to(self, metrics: dict, choice: Choice, validation: list[dict]) -> None:
        """The guard metrics of this evaluation point into ``metrics``; the first point also sets the choice's
        base values."""
        if not self.enabled:
            return
        inner = self.parts.inner
        if not choice.base:
            with inner.disable_adapter():
                metrics["base_val_loss"] = validation_loss(inner, validation, self.parts.tokenizer.pad_token_id)
        if self.windows is not None:
            with torch.autocast(device_type=self.parts.device.type, dtype=torch.bfloat16, enabled=self.parts.bf16):
                metrics.update(general_text_drift(inner, self.windows.to(self.parts.device)))
        if not choice.base:
            choice.base = base_values(metrics)

    def keep_best(self, loop: LoopConfig) -> None:
        """Rank 0, at a new best evaluation point with ``train.choose_checkpoint: best``: its adapter into the
        scratch folder, which every later checkpoint carries (``checkpoint_state.save_checkpoint``)."""
        if loop.run.train.choose_checkpoint == "best":
            save_adapter(self.parts.inner, self.scratch / BEST_ADAPTER_DIR, loop.run.fora, layers=loop.layers)
