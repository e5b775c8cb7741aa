"""Fourier-FoRA (the LoRA Unleashed paper, "LoRA Unleashed: Effortlessly Advancing from Low to Arbitrary Rank",
which names its method "Fourier-based Flexible Rank Adaptation"; not our FoRA, hence the name).

Each adaptation matrix M (A: (r, d_in) or B: (d_out, r)), of shape (p, q), is the real part of the inverse 2-D
DFT of a sparse spectral matrix F (p, q) that is zero except at n fixed random locations L, whose values are
the n trainable coefficients c (Eq. 3-4):

    M[a, b] = Re( 1/(p q) sum_{j, k} F[j, k] exp(i 2 pi (j a / p + k b / q)) ),   F[L_t] = c_t,

i.e. ``torch.fft.ifft2(F).real`` (the "backward" norm is the 1/(pq) of Eq. 3). The update keeps LoRA's form,
W = W0 + s B A with s = alpha / r, so A and B can reach any rank up to min(p, q) at n coefficients each.

Parameter budget (the paper's Table 10 accounting): per adapted module, min(n, r d_in) + min(n, d_out r);
n beyond a matrix's size makes every entry of its spectrum trainable.

Locations are drawn once per matrix shape from the method's seed and shared by every matrix of that shape
("spectral locations shared among all adaptation matrices"). Init (Section 3.3): B's coefficients are 0
(so B A = 0 at step 0); A's are Gaussian, scaled so the spatial A has the standard deviation of PEFT's Kaiming
A (uniform, bound 1/sqrt(d_in): std 1/sqrt(3 d_in)) or of Xavier (sqrt(2/(r + d_in))). The paper scales s by
Var(A')/Var(A~); a variance match needs the square root of that ratio, which is what we apply. The paper has no
dynamic variant; its rank is a plain setting (``fora.rank``).

Step size (``fourier.scale``). One Adam step moves every coefficient by about lr, so with F holding the step
(n entries of size lr), Parseval for the 1/(pq) inverse gives ||Re ifft2(F)||_F ~ lr sqrt(n / (2 p q)),
where LoRA's Adam step moves each of the p q entries by about lr: lr sqrt(p q). The paper's map is therefore
slower by a factor g = p q sqrt(2 / n) (407 for SmolLM2's A at r = 32, d_in = 576, n = 4096), and no AdamW lr
in LoRA's range makes it move. ``scale: lora-step`` (the default) multiplies the map by g, M = g Re(ifft2(F)),
so a step moves M as far as LoRA's moves A (``step_matched_gain``; measured in ``tests/test_fourier.py`` and
``benchmarks/fourier_step.py``); ``scale: plain-idft`` keeps the paper's 1/(pq). Adam is invariant to the gradient's
scale, so g changes the step and nothing else; A's init is scaled to its target std either way.

Saving materialises A and B: the adapter is a plain rank-r PEFT LoRA (``persistence.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def spectral_locations(shape: tuple[int, int], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of min(n, p q) distinct positions in a (p, q) spectrum, the same for the same arguments."""
    p, q = shape
    gen = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + p * 7919 + q)
    flat = torch.randperm(p * q, generator=gen)[: min(n, p * q)]
    return flat // q, flat % q


def inverse_dft_real(coefficients: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                     shape: tuple[int, int]) -> torch.Tensor:
    """Re(ifft2(F)) (p, q) float32 for F zero except F[rows, cols] = coefficients."""
    spectrum = torch.zeros(shape, dtype=torch.complex64, device=coefficients.device)
    spectrum = spectrum.index_put((rows, cols), coefficients.to(torch.complex64))
    return torch.fft.ifft2(spectrum).real


class SpectralLinear(nn.Module):
    """A bias-free linear map x -> x M^T whose weight M (out_features, in_features) is Re(IFFT2(F))."""

    def __init__(self, in_features: int, out_features: int, n: int, seed: int, gain: float = 1.0) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.gain = float(gain)
        rows, cols = spectral_locations((out_features, in_features), n, seed)
        self.register_buffer("rows", rows, persistent=True)
        self.register_buffer("cols", cols, persistent=True)
        self.coefficients = nn.Parameter(torch.zeros(rows.numel()))

    @property
    def weight(self) -> torch.Tensor:
        w = inverse_dft_real(self.coefficients, self.rows, self.cols, (self.out_features, self.in_features))
        return w * self.gain if self.gain != 1.0 else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        return F.linear(x.to(w.dtype) if not torch.is_autocast_enabled() else x, w)

    @torch.no_grad()
    def init_spatial_std_(self, target_std: float, generator: torch.Generator) -> None:
        """Gaussian coefficients scaled so the spatial weight's standard deviation is ``target_std``."""
        c = torch.randn(self.coefficients.numel(), generator=generator, dtype=torch.float64)
        self.coefficients.copy_(c.to(self.coefficients))
        std = float(self.weight.double().std())
        if std > 0:
            self.coefficients.mul_(target_std / std)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, n={self.coefficients.numel()}, "
                f"gain={self.gain:.4g}")


def step_matched_gain(shape: tuple[int, int], n: int, scale: str = "lora-step") -> float:
    """g with which an Adam step on the coefficients moves M = g Re(ifft2(F)) (shape (p, q)) by about
    lr sqrt(p q) in Frobenius norm, as LoRA's Adam step moves a dense (p, q) factor: g = p q sqrt(2 / n'),
    n' = min(n, p q) (module doc). ``scale="plain-idft"``: 1 (the paper's 1/(pq) inverse DFT)."""
    if scale == "plain-idft":
        return 1.0
    p, q = shape
    return p * q * math.sqrt(2.0 / min(n, p * q))


def target_std(init: str, rank: int, d_in: int) -> float:
    """The spatial std of A at init: PEFT's Kaiming-uniform A (bound 1/sqrt(d_in)) or Xavier-normal."""
    if init == "xavier":
        return math.sqrt(2.0 / (rank + d_in))
    return 1.0 / math.sqrt(3.0 * d_in)
