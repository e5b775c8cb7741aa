"""Insert standard PEFT LoRA adapters at the chosen decoder layers, with a Stiefel init for FoRA.

At an adapted linear layer with frozen W0 (d_out x d_in) PEFT computes
    h = W0 x + (alpha / r) B A dropout(x),     B = lora_B.weight (d_out, r), A = lora_A.weight (r, d_in).

Stiefel methods (fora, stiefel-lora) start on the manifold with the model unchanged:
    factor B: B = Q of a sign-fixed QR of a Gaussian (d_out, r) matrix (B^T B = I_r), A = 0;
    factor A: A = Q^T of a sign-fixed QR of a Gaussian (d_in, r) matrix (A A^T = I_r), B = 0.
fg-lora-orth and fora-frozen-b start the same way but train by AdamW (fora-frozen-b only the other factor).
Plain methods (lora, fg-lora) keep PEFT's default init (A Kaiming-uniform, B = 0).
Either way BA = 0 at step 0, so outputs equal the base model's.

The other methods (``methods.py``): DoRA, rsLoRA and PiSSA are PEFT's own (``use_dora``, ``use_rslora``,
``init_lora_weights="pissa"``); FILet (``filet.py``) and PiSSA move s B0 A0 out of the base weight, so the
output is unchanged too; Fourier-FoRA (``fourier.py``) replaces each lora_A / lora_B by a spectral map.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from peft import LoraConfig, PeftModel, get_peft_model

from .architecture import find_decoder_layers, module_names_for_layers
from .cayley_adam import qr_retraction
from .config import ForaConfig, ForaConfigError
from .filet import filet_factors, orthonormalize_b, weight_out_in
from .fourier import SpectralLinear, step_matched_gain, target_std
from .peft_layers import ADAPTER_NAME, lora_factors, lora_layers  # noqa: F401 (re-exported)
from .residual import capture_initial_factors


def build_lora_config(model: nn.Module, layers: list[int], config: ForaConfig) -> LoraConfig:
    """The PEFT LoraConfig with explicit module names for the given layers (no substring matching)."""
    names = module_names_for_layers(model, layers, config.target_modules)
    is_conv1d = any(type(model.get_submodule(n)).__name__ == "Conv1D" for n in names)
    spec = config.spec
    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=names,
        fan_in_fan_out=is_conv1d,
        bias="none",
        task_type="CAUSAL_LM",
        use_dora=spec.adapter == "dora",
        use_rslora=spec.rslora,
        init_lora_weights="pissa" if spec.init == "pissa" else True,
    )


def initial_stiefel_factors(peft_model: nn.Module, factor: str = "B", seed: int = 0) -> list[torch.Tensor]:
    """The constrained factor of every adapter as ``stiefel_init_`` sets it (float64), in adapter order:
    B (d_out, r) with orthonormal columns, or A (r, d_in) with orthonormal rows. Replays the same generator,
    so a trained adapter can be compared with where it started."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for name, a, b in lora_factors(peft_model):
        if factor == "B":
            d_out, r = b.shape
            if d_out < r:
                raise ForaConfigError(f"rank {r} exceeds d_out = {d_out} at '{name}': B cannot have orthonormal columns")
            out.append(qr_retraction(torch.randn(d_out, r, generator=gen, dtype=torch.float64)))
        else:
            r, d_in = a.shape
            if d_in < r:
                raise ForaConfigError(f"rank {r} exceeds d_in = {d_in} at '{name}': A cannot have orthonormal rows")
            out.append(qr_retraction(torch.randn(d_in, r, generator=gen, dtype=torch.float64)).mT)
    return out


@torch.no_grad()
def stiefel_init_(peft_model: nn.Module, factor: str = "B", seed: int = 0) -> None:
    """Put the constrained factor of every adapter on the Stiefel manifold and zero the other (see module doc)."""
    factors = lora_factors(peft_model)
    if any(a.device.type == "meta" for _, a, _ in factors):
        return
    for (_, a, b), x0 in zip(factors, initial_stiefel_factors(peft_model, factor, seed), strict=True):
        if factor == "B":
            b.copy_(x0.to(b.dtype))
            a.zero_()
        else:
            a.copy_(x0.to(a.dtype))
            b.zero_()


def freeze_orthonormal_factor_(peft_model: nn.Module, factor: str = "B") -> None:
    """Keep every adapter's orthonormal factor at its start (``requires_grad = False``): only the other trains."""
    index = 2 if factor == "B" else 1
    for f in lora_factors(peft_model):
        f[index].requires_grad_(False)


BASE_PREFIX = "base_model.model."


def base_module_name(peft_name: str) -> str:
    """'base_model.model.model.layers.0.self_attn.q_proj' -> 'model.layers.0.self_attn.q_proj'."""
    return peft_name[len(BASE_PREFIX):] if peft_name.startswith(BASE_PREFIX) else peft_name


@torch.no_grad()
def filet_init_(peft_model: nn.Module, energies: dict[str, torch.Tensor], config: ForaConfig) -> None:
    """FILet (``filet.py``): A, B from the lowest-energy directions of each W0; W0 <- W0 - s B A."""
    for name, layer in lora_layers(peft_model):
        key = base_module_name(name)
        if key not in energies:
            raise ForaConfigError(f"no FILet energies for '{key}': the calibration did not collect them "
                                  f"(re-run calibration with method '{config.method}')")
        base = layer.get_base_layer()
        w0 = weight_out_in(base)
        a, b = filet_factors(w0, energies[key], config.rank)
        if config.uses_stiefel:
            a, b = orthonormalize_b(a, b, config.stiefel.factor)
        lora_a, lora_b = layer.lora_A[ADAPTER_NAME].weight, layer.lora_B[ADAPTER_NAME].weight
        lora_a.copy_(a.to(lora_a))
        lora_b.copy_(b.to(lora_b))
        scale = layer.scaling[ADAPTER_NAME]
        w0.copy_((w0.double() - scale * (b @ a)).to(w0.dtype))


def fourier_adapters_(peft_model: nn.Module, config: ForaConfig) -> None:
    """Fourier-FoRA (``fourier.py``): every lora_A / lora_B becomes a SpectralLinear; B's coefficients 0."""
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    n = config.fourier.n_coefficients
    for _, layer in lora_layers(peft_model):
        old_a, old_b = layer.lora_A[ADAPTER_NAME], layer.lora_B[ADAPTER_NAME]
        device = old_a.weight.device
        scale = config.fourier.scale
        a = SpectralLinear(old_a.in_features, old_a.out_features, n, config.seed,
                           step_matched_gain((old_a.out_features, old_a.in_features), n, scale))
        b = SpectralLinear(old_b.in_features, old_b.out_features, n, config.seed,
                           step_matched_gain((old_b.out_features, old_b.in_features), n, scale))
        if device.type != "meta":
            a.init_spatial_std_(target_std(config.fourier.init, config.rank, old_a.in_features), gen)
        layer.lora_A[ADAPTER_NAME] = a.to(device)
        layer.lora_B[ADAPTER_NAME] = b.to(device)


def apply_fora(model: nn.Module, layers: list[int] | None, config: ForaConfig,
               filet_energies: dict[str, torch.Tensor] | None = None) -> PeftModel:
    """Wrap ``model`` in a PEFT LoRA model with adapters only at ``layers`` (all layers when None), set up
    as ``config.method`` says (``methods.py``).

    For methods without Fisher selection ``layers`` may be None. FILet methods need ``filet_energies``
    ({base module name: energies (d_in,)}, from the calibration pass). Returns a ``peft.PeftModel``; what
    ``save_adapter`` writes loads in plain PEFT whatever the method.
    """
    num_layers = find_decoder_layers(model).num_layers
    if layers is None:
        if config.uses_fisher:
            raise ForaConfigError(f"method '{config.method}' needs the selected layers (from select_layers)")
        layers = list(range(num_layers))
    if not layers:
        raise ForaConfigError("no layers selected for adapters")
    if len(set(layers)) != len(layers):
        raise ForaConfigError(f"duplicate layer indices in {layers}")
    lora_config = build_lora_config(model, list(layers), config)
    spec = config.spec
    if spec.init == "filet" and filet_energies is None:
        raise ForaConfigError(f"method '{config.method}' needs the FILet energies from the calibration pass")
    torch.manual_seed(config.seed)  # PEFT's default A init draws from the global generator
    peft_model = get_peft_model(model, lora_config)
    meta = any(p.device.type == "meta" for p in peft_model.parameters())
    if spec.orthonormal_start:
        stiefel_init_(peft_model, config.stiefel.factor, config.seed)
    if spec.frozen_factor:
        freeze_orthonormal_factor_(peft_model, config.stiefel.factor)
    elif spec.init == "filet" and not meta:
        filet_init_(peft_model, filet_energies or {}, config)
    if spec.adapter == "fourier":
        fourier_adapters_(peft_model, config)
    if spec.residual and not meta:
        capture_initial_factors(peft_model)
    return peft_model


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
