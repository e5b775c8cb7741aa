"""Save, load and merge FoRA adapters as standard PEFT artifacts.

``save_adapter`` writes PEFT's ``adapter_config.json`` + ``adapter_model.safetensors`` (loadable by plain
``peft.PeftModel.from_pretrained`` and by vLLM, no fora_core needed) plus ``fora_config.json`` and, when
given, ``fisher_report.json`` so the method's settings and the layer selection travel with the adapter.
Merging computes W <- W0 + (alpha / r) B A at the adapted layers only; the result is a plain
transformers model of the base architecture.

Whatever the method, what is saved is a LoRA that vanilla PEFT loads: PiSSA and FILet adapters as the
rank-2r LoRA of ``residual.py`` against the original base, Fourier-FoRA adapters as their dense A and B
(with the spectral coefficients beside them in ``fourier_coefficients.safetensors``, used only to resume).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from .config import ForaConfig
from .fisher import FisherReport
from .peft_layers import ADAPTER_NAME, lora_layers
from .residual import exported_state, has_initial_factors, restore_residual_

FORA_CONFIG_FILE = "fora_config.json"
FISHER_REPORT_FILE = "fisher_report.json"
FOURIER_FILE = "fourier_coefficients.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _dense_fourier_state(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, layer in lora_layers(peft_model):
        for part in ("lora_A", "lora_B"):
            out[f"{name}.{part}.{ADAPTER_NAME}.weight"] = getattr(layer, part)[ADAPTER_NAME].weight.detach()
    return out


def _fourier_coefficients(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{name}.{part}": getattr(layer, part)[ADAPTER_NAME].coefficients.detach().float().cpu().contiguous()
            for name, layer in lora_layers(peft_model) for part in ("lora_A", "lora_B")}


def _rewrite_adapter_config(path: Path, **changes) -> None:
    file = path / "adapter_config.json"
    data = json.loads(file.read_text())
    data.update(changes)
    file.write_text(json.dumps(data, indent=2, sort_keys=True))


def save_adapter(
    peft_model: PeftModel,
    path: str | Path,
    config: ForaConfig,
    report: FisherReport | None = None,
    layers: list[int] | None = None,
) -> Path:
    """Save the adapter in PEFT format with the FoRA config (and selected layers, Fisher report) beside it."""
    path = Path(path)
    spec = config.spec
    if spec.adapter == "fourier":
        peft_model.save_pretrained(path, state_dict=_dense_fourier_state(peft_model))
        save_file(_fourier_coefficients(peft_model), str(path / FOURIER_FILE))
    elif spec.residual and has_initial_factors(peft_model):
        peft_model.save_pretrained(path, state_dict=exported_state(peft_model))
        _rewrite_adapter_config(path, r=2 * config.rank, lora_alpha=2 * config.alpha, init_lora_weights=True)
    else:
        peft_model.save_pretrained(path)
    meta = {"fora": config.to_dict(), "layers": layers, "saved_as": _saved_as(config)}
    (path / FORA_CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    if report is not None:
        report.save(path / FISHER_REPORT_FILE)
    return path


def _saved_as(config: ForaConfig) -> str:
    spec = config.spec
    if spec.adapter == "fourier":
        return "dense rank-r LoRA (A and B materialised from the spectral coefficients)"
    if spec.residual:
        return "rank-2r LoRA [A; A0], [B, -B0] against the original base (the init's residual folded back)"
    return "rank-r LoRA"


@torch.no_grad()
def restore_training_state(peft_model: nn.Module, adapter_dir: str | Path, config: ForaConfig) -> None:
    """Put a checkpoint's adapter (written by ``save_adapter``) back into a model built by ``apply_fora``
    with the same config, for resuming: spectral coefficients, the residual split, or the plain weights."""
    adapter_dir = Path(adapter_dir)
    spec = config.spec
    if spec.adapter == "fourier":
        saved = load_file(str(adapter_dir / FOURIER_FILE))
        for name, layer in lora_layers(peft_model):
            for part in ("lora_A", "lora_B"):
                coeffs = getattr(layer, part)[ADAPTER_NAME].coefficients
                coeffs.copy_(saved[f"{name}.{part}"].to(coeffs))
    elif spec.residual and has_initial_factors(peft_model):
        restore_residual_(peft_model, load_file(str(adapter_dir / ADAPTER_WEIGHTS)))
    else:
        set_peft_model_state_dict(peft_model, load_file(str(adapter_dir / ADAPTER_WEIGHTS)))


def trainable_parameters(adapter_dir: str | Path) -> int:
    """The trainable parameters a saved adapter stands for: the spectral coefficients of a Fourier adapter,
    half the factors of a residual (rank-2r) export (the A0, B0 half is frozen), the free factor only where the
    orthonormal one was frozen (fora-frozen-b), else every saved tensor."""
    from safetensors import safe_open

    adapter_dir = Path(adapter_dir)
    meta_file = adapter_dir / FORA_CONFIG_FILE
    config = ForaConfig.from_dict(json.loads(meta_file.read_text())["fora"]) if meta_file.exists() else None
    path = adapter_dir / (FOURIER_FILE if (adapter_dir / FOURIER_FILE).exists() else ADAPTER_WEIGHTS)
    frozen = f"lora_{config.stiefel.factor}" if config is not None and config.spec.frozen_factor else None
    total = 0
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            if frozen is not None and key.endswith(f"{frozen}.weight"):
                continue
            n = 1
            for d in f.get_slice(key).get_shape():
                n *= d
            total += n
    if config is not None and config.spec.residual and path.name == ADAPTER_WEIGHTS:
        total //= 2
    return total


def load_adapter(
    base_model: nn.Module, path: str | Path, is_trainable: bool = False
) -> tuple[PeftModel, ForaConfig | None, FisherReport | None]:
    """Load an adapter saved by ``save_adapter`` (or any PEFT LoRA adapter) onto ``base_model``."""
    path = Path(path)
    model = PeftModel.from_pretrained(base_model, str(path), is_trainable=is_trainable)
    config = None
    if (path / FORA_CONFIG_FILE).exists():
        config = ForaConfig.from_dict(json.loads((path / FORA_CONFIG_FILE).read_text())["fora"])
    report = FisherReport.load(path / FISHER_REPORT_FILE) if (path / FISHER_REPORT_FILE).exists() else None
    return model, config, report


def merge_adapter(peft_model: PeftModel) -> nn.Module:
    """Fold every adapter into its base weight and drop the PEFT wrappers (a plain transformers model)."""
    return peft_model.merge_and_unload()
