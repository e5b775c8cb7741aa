"""The config.json numbers of popular base models, for planning without the hub.

``fora validate`` and ``fora compile`` plan memory from a model's config alone; for a gated hub id on a machine
without hub access (a CI runner, an air-gapped compile host) this table stands in, and says so. The values are
those the models' own ``config.json`` files publish (shapes only; nothing here is a weight). The GPU benchmark
builds its randomly initialised models from the same table.
"""

from __future__ import annotations

_LLAMA3 = {"model_type": "llama", "vocab_size": 128256, "rope_theta": 500000.0, "max_position_embeddings": 131072,
           "rms_norm_eps": 1e-5, "hidden_act": "silu", "bos_token_id": 128000, "eos_token_id": 128001}

KNOWN_MODELS: dict[str, dict] = {
    "meta-llama/Llama-3.2-1B": {**_LLAMA3, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                                "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
                                "tie_word_embeddings": True},
    "meta-llama/Llama-3.2-3B": {**_LLAMA3, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
                                "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
                                "tie_word_embeddings": True},
    "meta-llama/Llama-3.1-8B": {**_LLAMA3, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                                "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                                "tie_word_embeddings": False},
    "meta-llama/Llama-3.1-70B": {**_LLAMA3, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                                 "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128,
                                 "tie_word_embeddings": False},
    "mistralai/Mistral-7B-v0.1": {"model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096,
                                  "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                                  "num_key_value_heads": 8, "max_position_embeddings": 32768,
                                  "tie_word_embeddings": False},
    "Qwen/Qwen2.5-7B": {"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
                        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                        "max_position_embeddings": 131072, "tie_word_embeddings": False},
}
KNOWN_MODELS["meta-llama/Llama-3.1-8B-Instruct"] = KNOWN_MODELS["meta-llama/Llama-3.1-8B"]
KNOWN_MODELS["meta-llama/Llama-3.2-1B-Instruct"] = KNOWN_MODELS["meta-llama/Llama-3.2-1B"]


def known_config(model_id: str):
    """A ``transformers`` config for a model of the table, or None."""
    entry = KNOWN_MODELS.get(model_id)
    if entry is None:
        return None
    from transformers import AutoConfig

    values = dict(entry)
    return AutoConfig.for_model(values.pop("model_type"), **values)
