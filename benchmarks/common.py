"""Shared helpers for the benchmarks: the SmolLM2 default, WikiText-2 sequences, timing, training steps."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fora_core import (  # noqa: E402
    ForaConfig,
    ModelSource,
    apply_fora,
    create_fora_optimizer,
    fisher_scores,
    select_layers,
)

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2" / "valid.txt"


def load_default(model: str = "smollm2-135m", device: str = "cpu", dtype: str = "float32"):
    return ModelSource(model, dtype=dtype).load(device)


def wikitext_sequences(tokenizer, count: int, length: int) -> torch.Tensor:
    """(count, length) token ids: consecutive windows of the WikiText-2 validation text."""
    text = WIKITEXT.read_text()
    ids = tokenizer(text[: count * length * 8], return_tensors="pt")["input_ids"][0]
    need = count * length
    if ids.numel() < need:
        raise SystemExit(f"not enough text for {count} x {length} tokens")
    return ids[:need].view(count, length)


def batches_of(seqs: torch.Tensor, batch_size: int, device: str = "cpu") -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(0, len(seqs), batch_size):
        ids = seqs[i : i + batch_size].to(device)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_trainable(model, method: str, layers: list[int] | None, rank: int = 32):
    config = ForaConfig(method=method, rank=rank, dropout=0.0)
    peft_model = apply_fora(model, layers, config)
    opt = create_fora_optimizer(peft_model, config, lr=2e-4, stiefel_lr=1e-3)
    return peft_model, opt


def time_train_steps(peft_model, opt, batch, steps: int, warmup: int, device: str = "cpu",
                     autocast: torch.dtype | None = None) -> list[float]:
    """Seconds per full training step (forward, backward, optimizer step, zero_grad)."""
    peft_model.train()
    times = []
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.split(":")[0], dtype=autocast, enabled=autocast is not None):
            loss = peft_model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


__all__ = ["ForaConfig", "batches_of", "build_trainable", "fisher_scores", "load_default", "median",
           "select_layers", "sync", "time_train_steps", "wikitext_sequences"]
