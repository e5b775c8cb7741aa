"""Tiny random causal LMs of each supported family, built offline from configs (no downloads)."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    Qwen3Config,
)

VOCAB = 128


def tiny_config(family: str, layers: int = 4):
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    if family == "llama":
        return LlamaConfig(**common, tie_word_embeddings=False)
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=16, tie_word_embeddings=True)
    if family == "gemma3":
        return Gemma3TextConfig(**common, head_dim=16, sliding_window=16, query_pre_attn_scalar=16)
    if family == "gpt2":
        return GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=layers, n_head=4, n_positions=128)
    raise ValueError(family)


def tiny_model(family: str = "llama", layers: int = 4, seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, layers), dtype=dtype)
    model.eval()
    return model


def random_batches(n: int, batch: int = 2, seq: int = 12, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """n mini-batches with a padded tail in the last row (attention_mask 0, labels -100 there)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (batch, seq), generator=gen)
        mask = torch.ones_like(ids)
        mask[-1, -3:] = 0
        labels = ids.masked_fill(mask == 0, -100)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out
