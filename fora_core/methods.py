"""Every method behind ``ForaConfig.method``, described by what it is made of.

A method is a choice on four independent axes:

    layers   all decoder layers, or only the Fisher-selected top K ("fg-" prefix, and fora itself);
    adapter  lora (W0 + s B A), dora (PEFT's weight-decomposed LoRA), or fourier (A and B the real part of an
             inverse 2-D DFT of n learnable spectral coefficients, ``fourier.py``);
    init     default (PEFT: A Kaiming, B = 0), stiefel (B orthonormal, A = 0, B then trained by Cayley-Adam),
             orthonormal (FoRA's start, B orthonormal, A = 0, without the manifold), pissa (PEFT: principal singular
             triplets of W0, residual base), filet (lowest-Fisher-energy directions, residual base, ``filet.py``);
    training AdamW; Cayley-Adam on B for the Stiefel methods; LoRA+ (B's lr x ratio); rsLoRA scaling
             s = alpha / sqrt(r) instead of alpha / r; ``frozen_factor``: the orthonormal factor never trains.

Two methods exist to take FoRA apart (the ablation's mechanism arms, ``docs/ablation``): ``fg-lora-orth`` is
fg-lora started where FoRA starts (B orthonormal, A = 0) and trained by AdamW on both factors, so fora minus
fg-lora-orth is the manifold's part and fg-lora-orth minus fg-lora the start's; ``fora-frozen-b`` keeps B
at its orthonormal start and trains A alone (LoRA-FA), the limit of fora with a Stiefel lr of 0. Since
B^T B = I, the update s B A has the singular values of s A, so a high effective rank at a small Stiefel lr
comes from A and the start, not from B's training.

Methods that change the base weights (pissa, filet) are saved as a plain LoRA of rank 2r against the
original W0 (``residual.py``); Fourier adapters are saved as the dense A and B they stand for. Every saved
adapter loads in vanilla PEFT.

Combinations the maths does not allow are not offered: a Fourier factor cannot stay on the Stiefel
manifold (B lives in the n-dimensional span of fixed Fourier atoms; a Cayley step leaves that span, and
projecting back breaks B^T B = I), and DoRA's column normalisation undoes an orthonormal B's scale.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    name: str
    fisher_layers: bool
    """Adapters only at the Fisher-selected top-K layers (K = fora.layer_budget)."""
    adapter: str = "lora"
    """lora | dora | fourier."""
    init: str = "default"
    """default | stiefel | orthonormal | pissa | filet."""
    frozen_factor: bool = False
    """The orthonormal factor (``fora.stiefel.factor``) keeps its start and is not trained."""
    rslora: bool = False
    loraplus: bool = False
    summary: str = ""

    @property
    def stiefel(self) -> bool:
        """One factor kept on the Stiefel manifold and trained with Cayley-Adam."""
        return self.init == "stiefel" or self.name == "fora-filet"

    @property
    def orthonormal_start(self) -> bool:
        """One factor starts orthonormal and the other at 0 (``adapters.stiefel_init_``)."""
        return self.init in ("stiefel", "orthonormal")

    @property
    def residual(self) -> bool:
        """The init moves part of W0 into the adapter (W_res = W0 - s B0 A0); saved as a rank-2r LoRA."""
        return self.init in ("pissa", "filet")


def _specs() -> dict[str, MethodSpec]:
    specs = [
        MethodSpec("fora", True, init="stiefel", summary="Fisher top-K layers, B on the Stiefel manifold"),
        MethodSpec("fg-lora", True, summary="Fisher top-K layers, plain LoRA"),
        MethodSpec("stiefel-lora", False, init="stiefel", summary="all layers, B on the Stiefel manifold"),
        MethodSpec("lora", False, summary="all layers, plain LoRA"),
        MethodSpec("dora", False, adapter="dora", summary="all layers, PEFT DoRA"),
        MethodSpec("fg-dora", True, adapter="dora", summary="Fisher top-K layers, PEFT DoRA"),
        MethodSpec("rslora", False, rslora=True, summary="all layers, LoRA scaled by alpha / sqrt(r)"),
        MethodSpec("fg-rslora", True, rslora=True, summary="Fisher top-K layers, rsLoRA"),
        MethodSpec("pissa", False, init="pissa", summary="all layers, PEFT PiSSA init (residual base)"),
        MethodSpec("fg-pissa", True, init="pissa", summary="Fisher top-K layers, PiSSA init"),
        MethodSpec("loraplus", False, loraplus=True, summary="all layers, LoRA+ (B's lr x lora_plus.ratio)"),
        MethodSpec("fg-loraplus", True, loraplus=True, summary="Fisher top-K layers, LoRA+"),
        MethodSpec("filet", False, init="filet", summary="all layers, FILet init (lowest Fisher energy)"),
        MethodSpec("fg-filet", True, init="filet", summary="Fisher top-K layers, FILet init (one calibration pass)"),
        MethodSpec("fora-filet", True, init="filet",
                   summary="Fisher top-K layers, FILet init with B orthonormalised (B = Q, A = R A_filet), Cayley-Adam"),
        MethodSpec("fg-lora-orth", True, init="orthonormal",
                   summary="Fisher top-K layers, FoRA's start (B orthonormal, A = 0), AdamW on both factors"),
        MethodSpec("fora-frozen-b", True, init="orthonormal", frozen_factor=True,
                   summary="Fisher top-K layers, B orthonormal and frozen, A trained by AdamW (LoRA-FA)"),
        MethodSpec("fourier-fora", False, adapter="fourier", summary="all layers, Fourier-FoRA spectral A and B"),
        MethodSpec("fg-fourier-fora", True, adapter="fourier", summary="Fisher top-K layers, Fourier-FoRA"),
    ]
    return {s.name: s for s in specs}


METHOD_SPECS: dict[str, MethodSpec] = _specs()
METHODS: tuple[str, ...] = tuple(METHOD_SPECS)
FISHER_METHODS: tuple[str, ...] = tuple(n for n, s in METHOD_SPECS.items() if s.fisher_layers)
STIEFEL_METHODS: tuple[str, ...] = tuple(n for n, s in METHOD_SPECS.items() if s.stiefel)
FILET_METHODS: tuple[str, ...] = tuple(n for n, s in METHOD_SPECS.items() if s.init == "filet")
