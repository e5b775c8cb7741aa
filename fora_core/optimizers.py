"""The FoRA optimizer: Cayley-Adam on the Stiefel-constrained LoRA factors, AdamW on everything else.

Shaped like ``peft.optimizers.create_loraplus_optimizer``: parameters are taken from explicit lists (each
PEFT LoRA layer's ``lora_A`` / ``lora_B`` weights), never by matching substrings of names.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.optim import AdamW, Optimizer

from .adapters import lora_factors
from .cayley_adam import CayleyAdam
from .config import ForaConfig


class ForaOptimizer(Optimizer):
    """Two optimizers stepped together and seen as one (for LR schedulers, grad scalers, checkpoints).

    ``param_groups`` is the concatenation of the inner optimizers' groups (the same dict objects), so an
    LR scheduler scales the AdamW and the Cayley-Adam learning rates alike. Each group carries a ``kind``
    of 'adamw' or 'stiefel'.
    """

    def __init__(self, adamw: AdamW | None, stiefel: CayleyAdam | None) -> None:
        self.inner: list[Optimizer] = [o for o in (adamw, stiefel) if o is not None]
        if not self.inner:
            raise ValueError("ForaOptimizer needs at least one trainable parameter")
        groups = [g for o in self.inner for g in o.param_groups]
        super().__init__([{"params": []}], {})
        self.param_groups = groups
        self.adamw, self.stiefel = adamw, stiefel

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.inner:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.inner:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"inner": [o.state_dict() for o in self.inner]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        for opt, sd in zip(self.inner, state_dict["inner"], strict=True):
            opt.load_state_dict(sd)
        self.param_groups = [g for o in self.inner for g in o.param_groups]

    @property
    def state(self):  # type: ignore[override]
        merged: dict = {}
        for opt in self.inner:
            merged.update(opt.state)
        return merged

    @state.setter
    def state(self, value) -> None:  # Optimizer.__init__ assigns it; the inner optimizers own the state
        pass


def constrained_factors(peft_model: nn.Module, config: ForaConfig) -> list[nn.Parameter]:
    """The parameters kept on the Stiefel manifold: every adapter's B (or A), empty for plain LoRA."""
    if not config.uses_stiefel:
        return []
    index = 2 if config.stiefel.factor == "B" else 1
    return [f[index] for f in lora_factors(peft_model)]


def create_fora_optimizer(
    peft_model: nn.Module,
    config: ForaConfig,
    lr: float = 2e-4,
    stiefel_lr: float = 0.3,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> ForaOptimizer:
    """Cayley-Adam (lr = ``stiefel_lr``) on the constrained factors; AdamW (``lr``, ``weight_decay``) on
    every other trainable parameter. For lora / fg-lora everything goes to AdamW.

    ``stiefel_lr`` is not on AdamW's scale: Cayley-Adam normalises the whole matrix's moment by one scalar,
    so a step moves B by about ``stiefel_lr`` in Frobenius norm, where AdamW moves every element by about
    ``lr`` (lr sqrt(d_out r) in all). 1e-3 leaves B essentially at its random init; the ablation
    (docs/ablation) found 0.3 best on SmolLM2."""
    constrained = constrained_factors(peft_model, config)
    constrained_ids = {id(p) for p in constrained}
    free = [p for p in peft_model.parameters() if p.requires_grad and id(p) not in constrained_ids]
    adamw = None
    if config.spec.loraplus:  # PEFT's LoRA+: B (and embedding B) at lr x ratio, the rest at lr
        from peft.optimizers import create_loraplus_optimizer

        adamw = create_loraplus_optimizer(peft_model, AdamW, lr=lr, loraplus_lr_ratio=config.lora_plus.ratio,
                                          weight_decay=weight_decay, betas=betas)
        for g in adamw.param_groups:
            g["kind"] = "adamw"
    elif free:
        foreach = all(p.device.type != "meta" for p in free)
        adamw = AdamW(free, lr=lr, weight_decay=weight_decay, betas=betas, foreach=foreach)
        for g in adamw.param_groups:
            g["kind"] = "adamw"
    stiefel = None
    if constrained:
        stiefel = CayleyAdam(
            constrained,
            lr=stiefel_lr,
            solver=config.stiefel.solver,
            iterations=config.stiefel.iterations,
            qr_period=config.stiefel.qr_period,
            row_orthonormal=config.stiefel.factor == "A",
        )
        for g in stiefel.param_groups:
            g["kind"] = "stiefel"
    return ForaOptimizer(adamw, stiefel)
