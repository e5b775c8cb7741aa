"""Save, load and merge FoRA adapters as standard PEFT artifacts.

``save_adapter`` writes PEFT's ``adapter_config.json`` + ``adapter_model.safetensors`` (loadable by plain
``peft.PeftModel.from_pretrained`` and by vLLM, no fora_core needed) plus ``fora_config.json`` and, when
given, ``fisher_report.json`` so the method's settings and the layer selection travel with the adapter.
Merging computes W <- W0 + (alpha / r) B A at the adapted layers only; the result is a plain
transformers model of the base architecture.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch.nn as nn
from peft import PeftModel

from .config import ForaConfig
from .fisher import FisherReport

FORA_CONFIG_FILE = "fora_config.json"
FISHER_REPORT_FILE = "fisher_report.json"


def save_adapter(
    peft_model: PeftModel,
    path: str | Path,
    config: ForaConfig,
    report: FisherReport | None = None,
    layers: list[int] | None = None,
) -> Path:
    """Save the adapter in PEFT format with the FoRA config (and selected layers, Fisher report) beside it."""
    path = Path(path)
    peft_model.save_pretrained(path)
    meta = {"fora": config.to_dict(), "layers": layers}
    (path / FORA_CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    if report is not None:
        report.save(path / FISHER_REPORT_FILE)
    return path


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
