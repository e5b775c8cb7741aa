"""Find the decoder blocks and the LoRA target modules of a causal LM, whatever its family.

Works on Llama, Qwen2/Qwen3, Gemma2/Gemma3 (``model.layers``), GPT-2-style models (``transformer.h``)
and any model whose decoder is an ``nn.ModuleList`` of ``config.num_hidden_layers`` blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from .config import ForaConfigError

# Logical target name -> module paths (relative to one decoder block) tried in order.
# GPT-2 fuses q, k and v into one ``attn.c_attn`` Conv1D; its MLP is c_fc (up) and mlp.c_proj (down).
LOGICAL_TARGETS: dict[str, tuple[str, ...]] = {
    "q": ("self_attn.q_proj", "attn.q_proj", "attn.c_attn"),
    "k": ("self_attn.k_proj", "attn.k_proj", "attn.c_attn"),
    "v": ("self_attn.v_proj", "attn.v_proj", "attn.c_attn"),
    "o": ("self_attn.o_proj", "attn.o_proj", "attn.c_proj"),
    "gate": ("mlp.gate_proj",),
    "up": ("mlp.up_proj", "mlp.c_fc"),
    "down": ("mlp.down_proj", "mlp.c_proj"),
}


@dataclass(frozen=True)
class DecoderLayout:
    """Where the decoder blocks live: ``prefix`` is the ModuleList's qualified name (e.g. 'model.layers')."""

    prefix: str
    layers: nn.ModuleList

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layer_name(self, index: int) -> str:
        return f"{self.prefix}.{index}"


def _num_hidden_layers(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(text_cfg, attr, None)
        if isinstance(value, int):
            return value
    return None


def find_decoder_layers(model: nn.Module) -> DecoderLayout:
    """Return the ModuleList of decoder blocks.

    Picks, among all ``nn.ModuleList`` submodules whose length equals the config's layer count (or, with
    no config, all ModuleLists), the one holding the most parameters. PEFT wrappers are looked through.
    """
    base = model
    if hasattr(model, "get_base_model"):
        base = model.get_base_model()
    expected = _num_hidden_layers(base)
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in base.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if expected is not None and len(module) != expected:
            continue
        size = sum(p.numel() for p in module.parameters())
        if best is None or size > best[0]:
            best = (size, name, module)
    if best is None:
        raise ForaConfigError(
            f"could not find the decoder layers of {type(base).__name__}: no nn.ModuleList of "
            f"{expected} blocks (config.num_hidden_layers)"
        )
    return DecoderLayout(prefix=best[1], layers=best[2])


def _linear_like_names(block: nn.Module) -> list[str]:
    names = []
    for name, module in block.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names.append(name)
    return names


def resolve_target_modules(model: nn.Module, targets: list[str]) -> list[str]:
    """Map target names to module paths relative to a decoder block, in a stable order, deduplicated.

    A target is a logical name (q, k, v, o, gate, up, down) or a literal path/suffix such as
    'q_proj' or 'mlp.up_proj'. Raises ForaConfigError naming the target and the modules that exist.
    """
    layout = find_decoder_layers(model)
    block = layout.layers[0]
    available = _linear_like_names(block)
    resolved: list[str] = []
    for target in targets:
        candidates = LOGICAL_TARGETS.get(target, (target,))
        match = None
        for cand in candidates:
            hits = [n for n in available if n == cand or n.endswith("." + cand)]
            if len(hits) == 1:
                match = hits[0]
                break
            if len(hits) > 1:
                raise ForaConfigError(
                    f"target module '{target}' is ambiguous in {type(block).__name__}: matches {hits}"
                )
        if match is None:
            raise ForaConfigError(
                f"target module '{target}' not found in {type(block).__name__} (allowed: logical names "
                f"{', '.join(LOGICAL_TARGETS)} or one of {', '.join(available)})"
            )
        if match not in resolved:
            resolved.append(match)
    return resolved


def module_names_for_layers(model: nn.Module, layers: list[int], targets: list[str]) -> list[str]:
    """Fully qualified names of the target modules at the given decoder layers (what PEFT wraps)."""
    layout = find_decoder_layers(model)
    rel = resolve_target_modules(model, targets)
    for i in layers:
        if not 0 <= i < layout.num_layers:
            raise ForaConfigError(f"layer index {i} out of range (allowed: 0..{layout.num_layers - 1})")
    return [f"{layout.layer_name(i)}.{r}" for i in sorted(layers) for r in rel]
