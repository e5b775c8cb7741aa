"""Trainable-parameter counts on the real configurations of the paper's backbones, built on the meta
device (no weights), against the closed form K * sum_targets r (d_in + d_out)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma2Config, LlamaConfig, Qwen3Config

from fora_core import ForaConfig, apply_fora, count_trainable, select_layers

# name: (config, hidden, intermediate, q_out, kv_out) taken from the models' published config.json files
BACKBONES = {
    "llama-3.2-1b": (LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                 num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                                 vocab_size=128256, tie_word_embeddings=True), 2048, 8192, 2048, 512),
    "llama-3.1-8b": (LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                 num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                                 vocab_size=128256), 4096, 14336, 4096, 1024),
    "qwen3-8b": (Qwen3Config(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                             num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                             vocab_size=151936), 4096, 12288, 4096, 1024),
    "gemma-2-27b": (Gemma2Config(hidden_size=4608, intermediate_size=36864, num_hidden_layers=46,
                                 num_attention_heads=32, num_key_value_heads=16, head_dim=128,
                                 vocab_size=256000), 4608, 36864, 4096, 2048),
}


def closed_form(k, r, hidden, inter, q_out, kv_out):
    # q: hidden -> q_out, k, v: hidden -> kv_out, up: hidden -> inter, down: inter -> hidden
    per_layer = r * ((hidden + q_out) + 2 * (hidden + kv_out) + (hidden + inter) + (inter + hidden))
    return k * per_layer


@pytest.mark.parametrize("name", list(BACKBONES))
def test_half_the_layers_give_half_the_lora_parameters(name):
    cfg, hidden, inter, q_out, kv_out = BACKBONES[name]
    num_layers = cfg.num_hidden_layers
    counts = {}
    for method in ("fora", "lora"):
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
        config = ForaConfig(method=method, rank=32)
        layers = select_layers(num_layers, 0.5, strategy="first") if method == "fora" else None
        counts[method] = count_trainable(apply_fora(model, layers, config))
    assert counts["fora"] == closed_form(num_layers // 2, 32, hidden, inter, q_out, kv_out)
    assert counts["lora"] == closed_form(num_layers, 32, hidden, inter, q_out, kv_out)
    assert 2 * counts["fora"] == counts["lora"]


def test_llama_8b_count_is_the_papers():
    """The paper quotes FoRA at 28.3M trainable parameters on LLaMA-3.1-8B (r = 32, K = 16)."""
    cfg, hidden, inter, q_out, kv_out = BACKBONES["llama-3.1-8b"]
    assert round(closed_form(16, 32, hidden, inter, q_out, kv_out) / 1e6, 1) == 28.3
