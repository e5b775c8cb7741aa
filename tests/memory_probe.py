"""Run by tests/test_memory_plan.py in a fresh process: peak resident memory of two FoRA training steps of a
random Llama (model creation included) against the memory plan's peak. Prints one JSON line."""

from __future__ import annotations

import gc
import json
import sys

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from fora_core import ForaConfig, apply_fora, create_fora_optimizer
from fora_core.memory import PeakMemory, enable_activation_checkpointing
from fora_core.memory_plan import plan_memory


def main(hidden: int, intermediate: int, layers: int, vocab: int, checkpointing: bool) -> dict:
    torch.set_num_threads(2)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
                      tie_word_embeddings=False)
    fora = ForaConfig(method="fora", rank=16, dropout=0.05, layer_budget=0.5)
    batch, length = 4, 256
    plan = plan_memory(cfg, fora, batch_size=batch, seq_len=length, checkpointing=checkpointing)
    ids = torch.randint(0, vocab, (batch, length))
    gc.collect()
    with PeakMemory("cpu", interval=0.001) as peak:
        start = peak.peak_bytes
        model = AutoModelForCausalLM.from_config(cfg)
        if checkpointing:
            enable_activation_checkpointing(model)
        # the lowest adapted layer is 0: the plan's worst case (every layer carries the graph)
        peft = apply_fora(model, list(range(0, layers, 2)), fora)
        peft.train()
        opt = create_fora_optimizer(peft, fora)
        for _ in range(2):
            peft(input_ids=ids, labels=ids, use_cache=False).loss.backward()
            opt.step()
            opt.zero_grad()
    return {"measured": peak.peak_bytes - start, "plan": plan.total}


if __name__ == "__main__":
    h, i, n, v, c = (int(x) for x in sys.argv[1:6])
    print(json.dumps(main(h, i, n, v, bool(c))))
