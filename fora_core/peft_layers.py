"""The PEFT LoRA layers a model carries, found by type (``LoraLayer``), never by parameter-name substrings.

The lowest module of the adapter code: ``adapters.py`` (which inserts the layers) and ``residual.py``
(which exports PiSSA and FILet as rank-2r LoRA) both read layers through it, so neither imports the other
at module level.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch.nn as nn
from peft.tuners.lora import LoraLayer

ADAPTER_NAME = "default"


def lora_layers(peft_model: nn.Module) -> Iterator[tuple[str, LoraLayer]]:
    """Every PEFT LoRA layer of the model with its qualified name, in module order."""
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER_NAME in module.lora_A:
            yield name, module


def lora_factors(peft_model: nn.Module) -> list[tuple[str, nn.Parameter, nn.Parameter]]:
    """(name, A, B) for every adapter: A = lora_A.weight (r, d_in), B = lora_B.weight (d_out, r)."""
    return [
        (name, layer.lora_A[ADAPTER_NAME].weight, layer.lora_B[ADAPTER_NAME].weight)
        for name, layer in lora_layers(peft_model)
    ]
