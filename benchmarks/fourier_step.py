"""How far one Adam step moves a Fourier-FoRA factor, against LoRA's dense factor (the baseline, measured in the
same run), on SmolLM2-135M's adapter shapes at r = 32, n = 4096 spectral coefficients:

    ratio = ||dM_LoRA||_F / ||dM_Fourier||_F   after the same number of Adam steps on the same gradients

``scale: plain-idft`` (the paper's 1/(pq) inverse DFT) against ``scale: lora-step`` (``fourier.step_matched_gain``).
The gradients are a fixed random G per step (loss <M, G_t>), so both follow Adam from the same signal.

    python benchmarks/fourier_step.py            # prints one row per shape and scale
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fora_core.fourier import SpectralLinear, step_matched_gain  # noqa: E402

SHAPES = {"q_proj A (r x d)": (32, 576), "q_proj B (d x r)": (576, 32), "up_proj B (d_ff x r)": (1536, 32),
          "down_proj A (r x d_ff)": (32, 1536)}


def moved(param: torch.nn.Parameter, weight, grads: list[torch.Tensor], lr: float) -> float:
    """||M_T - M_0||_F after one Adam step per gradient."""
    start = weight().detach().clone()
    opt = torch.optim.Adam([param], lr=lr)
    for g in grads:
        opt.zero_grad()
        (weight() * g).sum().backward()
        opt.step()
    return float((weight().detach() - start).norm())


def main(steps: int = 10, lr: float = 2e-3, n: int = 4096) -> None:
    print(f"Adam, lr {lr}, {steps} steps, n = {n}; ratio = LoRA's step / Fourier's (1.0 = as far as LoRA)")
    print(f"{'shape':<24} {'LoRA ||dM||':>12} {'plain-idft':>10} {'lora-step':>10}")
    for name, (p, q) in SHAPES.items():
        gen = torch.Generator().manual_seed(p * q)
        grads = [torch.randn(p, q, generator=gen) for _ in range(steps)]
        dense = torch.nn.Parameter(torch.zeros(p, q))
        lora = moved(dense, lambda d=dense: d, grads, lr)
        ratios = []
        for scale in ("plain-idft", "lora-step"):
            layer = SpectralLinear(q, p, n, seed=0, gain=step_matched_gain((p, q), n, scale))
            ratios.append(lora / moved(layer.coefficients, lambda m=layer: m.weight, grads, lr))
        print(f"{name:<24} {lora:>12.4f} {ratios[0]:>9.0f}x {ratios[1]:>9.2f}x")


if __name__ == "__main__":
    main()
