"""A tiny random Llama with the real SmolLM2 tokenizer, saved as a local model folder, and a few records."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from fora_core.model_source import convert_builtin


def tiny_model_dir(root: Path, layers: int = 4, intermediate: int = 96) -> Path:
    target = root / ("tiny-llama" if intermediate == 96 else f"tiny-llama-{intermediate}")
    if (target / "config.json").exists():
        return target
    tok = AutoTokenizer.from_pretrained(convert_builtin("smollm2-135m"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=intermediate, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(target)
    tok.save_pretrained(target)
    return target


def write_records(path: Path, n: int = 40, times: int | None = None) -> Path:
    """n LLM-Adapters records: "What is i plus i?" (or, with ``times``, "What is i times <times>?")."""
    if times is None:
        records = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"The answer is {2 * i}.",
                    "answer": str(2 * i)} for i in range(n)]
    else:
        records = [{"instruction": f"What is {i} times {times}?", "input": "", "output": f"It is {times * i}.",
                    "answer": str(times * i)} for i in range(n)]
    path.write_text(json.dumps(records))
    return path


def prepared_data_dir(root: Path, config: dict) -> Path:
    """``config``'s data prepared with its model's tokenizer into ``root/data`` (the training tests' fixture)."""
    from fora_core import ModelSource
    from pipelines.config.run_config import RunConfig
    from pipelines.steps.data_prep import prepare_data

    run = RunConfig.from_dict(config)
    _, tok = ModelSource(run.model).load()
    prepare_data(run.data, tok, root / "data")
    return root / "data"
