"""How much memory one training worker needs, from the model's config alone (no weights, no accelerator).

The model is built on the meta device (shapes, no storage) and the method's adapters put on it by the same
``apply_fora`` a run uses, so parameter counts are exact for any architecture. Activations follow the saved
tensors of a Llama-type decoder layer (Llama, Mistral, Qwen2, SmolLM; other families are close) under
autograd, with the base frozen and SDPA attention, per token of the batch (``B x T`` tokens):

  static    = P * w + P_lin * (q - w)           weights (w: bytes of ``dtype``; q: bytes per quantized
                                                decoder-linear weight, NF4 0.516, int8 1.0)
            + 4 * n_train * (2 + o)             adapter weights and gradients in float32, o optimizer states
                                                per element (AdamW 2, Cayley-Adam 1 for the Stiefel factor)
            + 4 * n_train                       DDP's gradient buckets (more than one worker)
  per layer = 2 * (4h + 4)                      two RMSNorms: their float32 input and 1/rms
            + a * (2 h_q + 2 d_kv) + 4 n_h      SDPA's q, k (after RoPE), v, output, and log-sum-exp
            + 3 a * i                           SwiGLU: gate, silu(gate), up
            + sum over adapted modules m:       LoRA input x (shared by modules reading the same tensor when
              4 r  +  inputs as below           no cast and no dropout; a float32 copy per module when the base
                                                is not float32; with dropout its mask, 1 byte on CUDA and 4
                                                on CPU, and its float32 output)
  final     = 4h + 4 + 4 V                      final norm, log-softmax of the logits (float32)
  transient = B T V (a + 4)                     the logits and their gradient around the loss
            + B T per layer                     the gradients of one layer's activations in the backward

(h hidden, h_q = heads x head_dim, d_kv = kv heads x head_dim, i intermediate, V vocabulary, r rank, a
activation bytes). Layers below the lowest adapted one keep nothing (no gradient flows there); before
calibration picks the layers the plan assumes the worst, layer 0. With activation checkpointing a layer keeps
only its input (a * h) and one layer's activations exist again while it is recomputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .config import ForaConfig

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
QUANT_BYTES = {"nf4": 0.5 + 1 / 64 + 4 / (64 * 256), "fp4": 0.5 + 1 / 64 + 4 / (64 * 256), "int8": 1.0}
"""Bytes per quantized weight: 4 bits plus the double-quantized absmax (one int8 per block of 64 and one
float32 per 256 blocks), or LLM.int8()'s byte (row scales are negligible)."""
GROUPS = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "o_proj": "attn_out",
          "gate_proj": "mlp_in", "up_proj": "mlp_in", "down_proj": "mlp_mid"}
GIB = 1024 ** 3


@dataclass
class Shape:
    """The numbers of a decoder the plan needs (from a transformers config)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def of(cls, config) -> Shape:
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(hidden=config.hidden_size, intermediate=config.intermediate_size,
                   layers=config.num_hidden_layers, heads=heads,
                   kv_heads=getattr(config, "num_key_value_heads", None) or heads, head_dim=head_dim,
                   vocab=config.vocab_size)


@dataclass
class Counts:
    """Exact parameter counts of the model with the method's adapters (from the meta-device model)."""

    total: int
    quantizable: int
    """Weights of the decoder layers' linear layers (what bitsandbytes quantizes)."""
    trainable: int
    stiefel: int
    """Trainable elements under Cayley-Adam (one moment each, not two)."""
    adapted: list[tuple[str, int, int]] = field(default_factory=list)
    """(module kind, d_in, rank) of every adapter of one adapted layer."""
    adapted_layers: int = 0


def count_parameters(config, fora: ForaConfig) -> Counts:
    """Build the model on the meta device, put the method's adapters on its first K layers, and count."""
    import warnings

    from transformers import AutoModelForCausalLM

    from .adapters import apply_fora, count_trainable
    from .architecture import find_decoder_layers
    from .peft_layers import lora_factors

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layout = find_decoder_layers(model)
    prefix = layout.layer_name(0).rsplit(".", 1)[0]
    total = sum(p.numel() for p in model.parameters())
    quantizable = sum(m.weight.numel() for n, m in model.named_modules()
                      if isinstance(m, torch.nn.Linear) and n.startswith(prefix + "."))
    k = fora.num_layers_to_adapt(layout.num_layers)
    energies = {} if fora.spec.init == "filet" else None
    with warnings.catch_warnings():  # PEFT asks a deprecated transformers property
        warnings.simplefilter("ignore", FutureWarning)
        peft = apply_fora(model, list(range(k)), fora, filet_energies=energies)
    trainable = count_trainable(peft)
    stiefel = 0
    first = f"{prefix}.0."
    adapted = []
    for name, a, b in lora_factors(peft):
        if fora.uses_stiefel:
            stiefel += (b if fora.stiefel.factor == "B" else a).numel()
        inner = name.split("base_model.model.", 1)[-1]
        if inner.startswith(first):
            adapted.append((inner.rsplit(".", 1)[-1], a.shape[1], a.shape[0]))
    return Counts(total, quantizable, trainable, stiefel, adapted, k)


@dataclass
class MemoryPlan:
    """Peak bytes of one training worker, by part."""

    weights: float
    adapters: float
    """Adapter weights, gradients, optimizer states (and DDP buckets)."""
    activations: float
    """Saved for the backward pass at the configured batch and length (with checkpointing if on)."""
    activations_plain: float
    activations_checkpointed: float
    transient: float
    overhead: float
    checkpointing: bool
    detail: dict = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.weights + self.adapters + self.activations + self.transient + self.overhead

    def lines(self) -> list[str]:
        def g(x: float) -> str:
            return f"{x / GIB:7.2f} GiB"

        other = "off" if self.checkpointing else "on"
        alt = self.activations_plain if self.checkpointing else self.activations_checkpointed
        return [f"  weights            {g(self.weights)}  ({self.detail.get('weights', '')})",
                f"  adapters + optim.  {g(self.adapters)}  ({self.detail.get('adapters', '')})",
                f"  activations        {g(self.activations)}  ({self.detail.get('activations', '')}; "
                f"checkpointing {other}: {alt / GIB:.2f} GiB)",
                f"  logits (transient) {g(self.transient)}",
                f"  runtime overhead   {g(self.overhead)}",
                f"  peak per worker    {g(self.total)}"]


def activation_bytes_per_token(shape: Shape, counts: Counts, act_bytes: int, base_float32: bool,
                               dropout: float, mask_bytes: int = 1) -> tuple[float, float]:
    """(bytes one graph-carrying layer saves per token, of which its input a*h), per the module docstring.
    ``mask_bytes``: a dropout mask element (CUDA keeps a bool, the CPU kernel a float32)."""
    h, hq, dkv = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    layer = 2 * (4 * h + 4) + act_bytes * (2 * hq + 2 * dkv) + 4 * shape.heads + 3 * act_bytes * shape.intermediate
    shared: set[str] = set()
    for kind, d_in, rank in counts.adapted:
        layer += 4 * rank
        if dropout > 0:
            layer += d_in * (mask_bytes + 4)
        elif not base_float32:
            layer += 4 * d_in
        elif GROUPS.get(kind, kind) not in shared:
            shared.add(GROUPS.get(kind, kind))
            layer += act_bytes * d_in
    return layer, act_bytes * h


def plan_memory(config, fora: ForaConfig, *, dtype: str = "float32", quantization: str = "none",
                batch_size: int = 8, seq_len: int = 256, checkpointing: bool = False, workers: int = 1,
                gpu: bool = False, counts: Counts | None = None) -> MemoryPlan:
    """The peak memory of one worker training ``config``'s model with ``fora`` (see the module docstring).

    ``seq_len``: tokens per sequence (data.max_length: the longest a padded batch gets, a packed one always);
    ``gpu`` adds the CUDA context and allocator reserve (1 GiB)."""
    shape = Shape.of(config)
    counts = counts or count_parameters(config, fora)
    w = DTYPE_BYTES[dtype]
    weights = counts.total * w
    if quantization != "none":
        weights += counts.quantizable * (QUANT_BYTES[quantization] - w)
    states = 2 * (counts.trainable - counts.stiefel) + counts.stiefel
    adapters = 4 * counts.trainable * (2 + (1 if workers > 1 else 0)) + 4 * states
    per_layer, layer_input = activation_bytes_per_token(shape, counts, w, dtype == "float32", fora.dropout,
                                                        mask_bytes=1 if gpu else 4)
    tokens = batch_size * seq_len
    graph_layers = shape.layers  # worst case before calibration: the lowest adapted layer is layer 0
    final = 4 * shape.hidden + 4 + 4 * shape.vocab
    plain = tokens * (graph_layers * per_layer + final)
    ckpt = tokens * (graph_layers * layer_input + per_layer + final)
    transient = tokens * shape.vocab * (w + 4) + tokens * per_layer
    detail = {
        "weights": f"{counts.total / 1e9:.2f}B parameters in {dtype}"
                   + (f", {counts.quantizable / 1e9:.2f}B of them {quantization}" if quantization != "none" else ""),
        "adapters": f"{counts.trainable / 1e6:.1f}M trainable at {counts.adapted_layers} layers",
        "activations": f"{batch_size} x {seq_len} tokens, {graph_layers} layers"
                       + (", checkpointed" if checkpointing else ""),
    }
    return MemoryPlan(weights=weights, adapters=adapters, activations=ckpt if checkpointing else plain,
                      activations_plain=plain, activations_checkpointed=ckpt, transient=transient,
                      overhead=GIB if gpu else 0.0, checkpointing=checkpointing, detail=detail)


def fits(plan: MemoryPlan, capacity_bytes: float, headroom: float = 0.9) -> bool:
    """True when the plan's peak is within ``headroom`` of the capacity (fragmentation, kernels' scratch)."""
    return plan.total <= headroom * capacity_bytes and math.isfinite(plan.total)
