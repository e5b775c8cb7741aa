"""Adapters whose init moved part of W0 into them (PiSSA, FILet), saved as a LoRA that vanilla PEFT loads.

Training runs on W_res = W0 - s B0 A0 with the adapter starting at (A0, B0), so the trained model is

    W_res + s B A = W0 + s (B A - B0 A0) = W0 + s' B' A',   A' = [A; A0] (2r, d_in),  B' = [B, -B0] (d_out, 2r)

with s' = s: a rank-2r LoRA against the original base, lora_alpha' = 2 alpha (so alpha'/2r = alpha/r; PEFT
converts PiSSA/OLoRA the same way). The first r rows/columns of the saved factors are the trained (A, B),
the rest the initial ones, so a checkpoint of this form is enough to resume (``restore_residual_``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .peft_layers import ADAPTER_NAME, lora_layers

INITIAL = "fora_initial_factors"


def capture_initial_factors(peft_model: nn.Module) -> None:
    """Remember every adapter's (A0, B0) (float32, CPU) on its layer, for the export below."""
    for _, layer in lora_layers(peft_model):
        a, b = layer.lora_A[ADAPTER_NAME].weight, layer.lora_B[ADAPTER_NAME].weight
        setattr(layer, INITIAL, (a.detach().float().cpu().clone(), b.detach().float().cpu().clone()))


def has_initial_factors(peft_model: nn.Module) -> bool:
    return any(hasattr(layer, INITIAL) for _, layer in lora_layers(peft_model))


def exported_state(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """{'<layer>.lora_A.default.weight': A' (2r, d_in), '<layer>.lora_B.default.weight': B' (d_out, 2r)}."""
    out = {}
    for name, layer in lora_layers(peft_model):
        a0, b0 = getattr(layer, INITIAL)
        a, b = layer.lora_A[ADAPTER_NAME].weight.detach(), layer.lora_B[ADAPTER_NAME].weight.detach()
        out[f"{name}.lora_A.{ADAPTER_NAME}.weight"] = torch.cat([a, a0.to(a)], dim=0).contiguous()
        out[f"{name}.lora_B.{ADAPTER_NAME}.weight"] = torch.cat([b, -b0.to(b)], dim=1).contiguous()
    return out


@torch.no_grad()
def restore_residual_(peft_model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Resume from a saved rank-2r export: trained (A, B) into the adapter, W_res rebuilt from the saved
    (A0, B0) (whatever init this model got: W0 = W_res_now + s B0_now A0_now first)."""
    from .filet import weight_out_in

    keys = {k.replace(".weight", "").rsplit(".lora_", 1)[0]: k for k in saved if ".lora_A." in k}
    for name, layer in lora_layers(peft_model):
        short = name.removeprefix("base_model.model.")
        match = next((k for p, k in keys.items() if p.removeprefix("base_model.model.") == short), None)
        if match is None:
            raise KeyError(f"the saved adapter has no factors for '{short}'")
        a2, b2 = saved[match], saved[match.replace(".lora_A.", ".lora_B.")]
        lora_a, lora_b = layer.lora_A[ADAPTER_NAME].weight, layer.lora_B[ADAPTER_NAME].weight
        r = lora_a.shape[0]
        a0_now, b0_now = getattr(layer, INITIAL)
        a0, b0 = a2[r:].double(), -b2[:, r:].double()
        w = weight_out_in(layer.get_base_layer())
        s = layer.scaling[ADAPTER_NAME]
        w0 = w.double() + s * (b0_now.double().to(w.device) @ a0_now.double().to(w.device))
        w.copy_((w0 - s * (b0.to(w.device) @ a0.to(w.device))).to(w.dtype))
        lora_a.copy_(a2[:r].to(lora_a))
        lora_b.copy_(b2[:, :r].to(lora_b))
        setattr(layer, INITIAL, (a0.float().cpu(), b0.float().cpu()))
