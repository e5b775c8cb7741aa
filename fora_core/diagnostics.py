"""Adapter diagnostics: orthogonality, effective rank, update norms and output drift (paper Section 5.3).

Everything about an adapter's update dW = s B A (s = alpha / r, B: (d_out, r), A: (r, d_in)) is computed
from r x r matrices: with thin QRs B = Q_B R_B and A^T = Q_A R_A,

    dW = s Q_B (R_B R_A^T) Q_A^T,

and Q_B, Q_A have orthonormal columns, so the singular values of dW are s times those of the r x r core
C = R_B R_A^T. No d x d SVD is ever formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from .adapters import initial_stiefel_factors, lora_factors
from .cayley_adam import orthogonality_error


def update_singular_values(a: torch.Tensor, b: torch.Tensor, scaling: float = 1.0) -> torch.Tensor:
    """Singular values (descending, length r) of scaling * B @ A, from the r x r core (see module doc)."""
    a64, b64 = a.detach().double(), b.detach().double()
    _, r_b = torch.linalg.qr(b64, mode="reduced")  # (r, r)
    _, r_a = torch.linalg.qr(a64.mT, mode="reduced")  # (r, r)
    return scaling * torch.linalg.svdvals(r_b @ r_a.mT)


def entropy_effective_rank(singular_values: torch.Tensor) -> float:
    """Roy and Vetterli (2007): exp(H(p)) with p_i = sigma_i / sum_j sigma_j; 0 for a zero matrix."""
    s = singular_values.double().clamp_min(0)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(math.exp(-(p * p.log()).sum()))


@dataclass
class AdapterDiagnostics:
    name: str
    orthogonality_error: float | None
    """||B^T B - I||_F for a Stiefel-constrained B (||A A^T - I||_F for A); None when unconstrained."""
    effective_rank: float
    update_norm: float
    """||dW||_F = ||s B A||_F."""
    singular_values: list[float]


def adapter_diagnostics(
    peft_model: nn.Module, scaling: float, constrained: str | None = "B"
) -> list[AdapterDiagnostics]:
    """Diagnostics of every adapter. ``constrained`` names the Stiefel factor ('B', 'A') or None."""
    out = []
    for name, a, b in lora_factors(peft_model):
        sv = update_singular_values(a, b, scaling)
        ortho = None
        if constrained == "B":
            ortho = float(orthogonality_error(b.detach().double()))
        elif constrained == "A":
            ortho = float(orthogonality_error(a.detach().double().mT))
        out.append(
            AdapterDiagnostics(
                name=name,
                orthogonality_error=ortho,
                effective_rank=entropy_effective_rank(sv),
                update_norm=float(sv.square().sum().sqrt()),
                singular_values=sv.tolist(),
            )
        )
    return out


def max_orthogonality_error(peft_model: nn.Module, factor: str = "B") -> float:
    """The largest ||X^T X - I||_F over the constrained factors (cheap enough to log every step)."""
    worst = 0.0
    for _, a, b in lora_factors(peft_model):
        x = b if factor == "B" else a.mT
        worst = max(worst, float(orthogonality_error(x.detach().float())))
    return worst


@torch.no_grad()
def stiefel_factor_drift(peft_model: nn.Module, factor: str = "B", seed: int = 0) -> list[float]:
    """How far each constrained factor moved from its init: ||X - X_0||_F / ||X_0||_F (||X_0||_F = sqrt(r)).

    X_0 is replayed from the seed (``initial_stiefel_factors``). Near 0 means the Stiefel factor barely
    trained (a Stiefel lr too small for Cayley-Adam's step, which is about lr in Frobenius norm per step);
    sqrt(2) is a subspace orthogonal to the start."""
    out = []
    for (_, a, b), x0 in zip(lora_factors(peft_model), initial_stiefel_factors(peft_model, factor, seed), strict=True):
        x = (b if factor == "B" else a).detach().double().cpu()
        out.append(float((x - x0).norm() / x0.norm()))
    return out


@dataclass
class TextDrift:
    """Token sums over a text, base model vs tuned model (divide by ``tokens`` for means)."""

    nll_base: float
    """sum over predicted tokens of -log p_base(x_t | x_<t)."""
    nll_tuned: float
    kl: float
    """sum over predicted tokens of KL(p_base(. | x_<t) || p_tuned(. | x_<t))."""
    tokens: int

    def __add__(self, other: TextDrift) -> TextDrift:
        return TextDrift(self.nll_base + other.nll_base, self.nll_tuned + other.nll_tuned,
                         self.kl + other.kl, self.tokens + other.tokens)

    @property
    def perplexity_base(self) -> float:
        return math.exp(self.nll_base / max(1, self.tokens))

    @property
    def perplexity_tuned(self) -> float:
        return math.exp(self.nll_tuned / max(1, self.tokens))

    @property
    def mean_kl(self) -> float:
        return self.kl / max(1, self.tokens)


@torch.no_grad()
def text_drift(peft_model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TextDrift:
    """Next-token NLL of base and tuned model and their KL on one batch, from two forward passes.

    input_ids: (B, T). Position t < T-1 predicts token t+1; it counts when both t and t+1 are unmasked.
    The base model is the same PEFT model with its adapters disabled (no second copy of the weights).
    """
    was_training = peft_model.training
    peft_model.eval()
    try:
        tuned = peft_model(input_ids=input_ids, attention_mask=attention_mask).logits.float().log_softmax(-1)
        with peft_model.disable_adapter():
            base = peft_model(input_ids=input_ids, attention_mask=attention_mask).logits.float().log_softmax(-1)
    finally:
        peft_model.train(was_training)
    target = input_ids[:, 1:].unsqueeze(-1)  # (B, T-1, 1)
    base, tuned = base[:, :-1], tuned[:, :-1]  # (B, T-1, V)
    keep = torch.ones_like(input_ids[:, 1:], dtype=torch.bool)
    if attention_mask is not None:
        keep = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
    nll_b = -base.gather(-1, target).squeeze(-1)
    nll_t = -tuned.gather(-1, target).squeeze(-1)
    kl = (base.exp() * (base - tuned)).sum(-1)
    return TextDrift(float(nll_b[keep].sum()), float(nll_t[keep].sum()), float(kl[keep].sum()), int(keep.sum()))


__all__ = [
    "AdapterDiagnostics",
    "TextDrift",
    "text_drift",
    "adapter_diagnostics",
    "entropy_effective_rank",
    "max_orthogonality_error",
    "stiefel_factor_drift",
    "update_singular_values",
]
