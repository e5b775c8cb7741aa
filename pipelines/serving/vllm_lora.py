"""Whether vLLM's LoRA loader accepts an adapter folder, checked without vLLM (which needs a GPU or its CPU build).

Each rule is what vLLM's own loader does with the folder (vllm-project/vllm, read for this module):

* ``vllm/lora/peft_helper.py`` (``PEFTHelper.from_dict``): ``adapter_config.json`` must hold ``r``,
  ``lora_alpha`` and ``target_modules`` ("Missing required configuration fields"); other keys are ignored;
  ``_validate_features``: ``modules_to_save`` must be empty and ``use_dora`` false ("vLLM does not yet support
  DoRA"); the scale is ``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``), PEFT's;
* ``vllm/lora/lora_model.py`` (``LoRAModel.from_local_checkpoint``): the weights are read from
  ``adapter_model.safetensors`` (else ``.bin``/``.pt``: we write safetensors); every tensor's module must be one
  the model can adapt ("expected target modules in ... but received ...");
* ``vllm/lora/utils.py`` (``parse_fine_tuned_lora_name``): a tensor name is ``base_model.model.<module>.lora_A
  .weight`` or ``.lora_B.weight`` (or ``lora_embedding_A``/``_B``); anything else is "unsupported LoRA weight";
* ``vllm/config/lora.py``: the server's ``--max-lora-rank`` is one of 8, 16, 32, 64, 128, 256, 320, 512
  (default 16) and must be at least the adapter's ``r``; so the manifest passes the smallest that fits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..config.errors import RunConfigError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
REQUIRED = ("r", "lora_alpha", "target_modules")
MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# the linear layers of the decoder architectures vLLM adapts (Llama, Qwen2, Mistral, Gemma, Phi-3 families)
DECODER_LINEAR = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                            "qkv_proj", "gate_up_proj"})


class NotServableByVllm(RunConfigError):
    """The adapter folder is not one vLLM's LoRA loader reads; the message names the file and the field."""


@dataclass(frozen=True)
class VllmAdapter:
    rank: int
    alpha: float
    scale: float
    """What vLLM multiplies B A by: alpha / r (alpha / sqrt(r) with use_rslora), as PEFT and our merge do."""
    max_lora_rank: int
    """The smallest ``--max-lora-rank`` vLLM accepts that holds ``rank``."""
    modules: frozenset[str]


def tensor_module(name: str) -> tuple[str, str]:
    """(module path, 'lora_A' | 'lora_B') of a PEFT tensor name, as vLLM parses it; ValueError otherwise."""
    parts = name.split(".")
    start = 2 if name.startswith("base_model.model.") else 0
    if len(parts) >= 3 and parts[-1] == "weight" and parts[-2] in ("lora_A", "lora_B"):
        return ".".join(parts[start:-2]), parts[-2]
    if parts[-1] in ("lora_embedding_A", "lora_embedding_B"):
        return ".".join(parts[start:-1]), "lora_A" if parts[-1].endswith("A") else "lora_B"
    raise ValueError(f"{name} is unsupported LoRA weight")


def check_vllm_adapter(folder: str | Path, expected_modules: frozenset[str] = DECODER_LINEAR) -> VllmAdapter:
    """The adapter in ``folder`` as vLLM would load it; :class:`NotServableByVllm` naming what it would refuse."""
    from safetensors import safe_open

    folder = Path(folder)
    config_file, weights = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not config_file.is_file():
        raise NotServableByVllm(f"{folder}: no {ADAPTER_CONFIG} (vLLM reads the adapter's settings from it)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise NotServableByVllm(f"{config_file}: not JSON ({err.msg}, line {err.lineno})") from None
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise NotServableByVllm(f"{config_file}: missing {', '.join(missing)} (vLLM requires {', '.join(REQUIRED)})")
    if config.get("modules_to_save"):
        raise NotServableByVllm(f"{config_file}: modules_to_save is {config['modules_to_save']!r}; vLLM only "
                                "supports none (serve the merged form)")
    if config.get("use_dora"):
        raise NotServableByVllm(f"{config_file}: use_dora is true; vLLM does not load DoRA adapters (serve the "
                                "merged form: serve.form=merged)")
    if config.get("bias", "none") != "none":
        raise NotServableByVllm(f"{config_file}: bias is {config['bias']!r}; vLLM's LoRA serving takes 'none'")
    rank = config["r"]
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= MAX_LORA_RANKS[-1]:
        raise NotServableByVllm(f"{config_file}: r is {rank!r}; vLLM serves ranks 1..{MAX_LORA_RANKS[-1]}")
    if not weights.is_file():
        raise NotServableByVllm(f"{folder}: no {ADAPTER_WEIGHTS} (vLLM reads the weights from it)")
    modules: dict[str, set[str]] = {}
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            try:
                module, part = tensor_module(key)
            except ValueError as err:
                raise NotServableByVllm(f"{weights}: {err}") from None
            if module.rsplit(".", 1)[-1] not in expected_modules:
                raise NotServableByVllm(f"{weights}: module {module} is not one vLLM adapts "
                                        f"({', '.join(sorted(expected_modules))})")
            shape = f.get_slice(key).get_shape()
            r_axis = shape[0] if part == "lora_A" else shape[-1]
            if r_axis != rank:
                raise NotServableByVllm(f"{weights}: {key} has rank {r_axis}, adapter_config.json says r = {rank}")
            modules.setdefault(module, set()).add(part)
    if not modules:
        raise NotServableByVllm(f"{weights}: holds no LoRA tensors")
    half = sorted(m for m, parts in modules.items() if parts != {"lora_A", "lora_B"})
    if half:
        raise NotServableByVllm(f"{weights}: {half[0]} has only {''.join(modules[half[0]])} (vLLM needs A and B)")
    alpha = float(config["lora_alpha"])
    scale = alpha / (rank ** 0.5) if config.get("use_rslora") else alpha / rank
    return VllmAdapter(rank=rank, alpha=alpha, scale=scale,
                       max_lora_rank=next(m for m in MAX_LORA_RANKS if m >= rank),
                       modules=frozenset(m.rsplit(".", 1)[-1] for m in modules))
