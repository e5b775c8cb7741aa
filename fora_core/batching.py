"""Turn texts into padded causal-LM mini-batches (the shape ``fisher_scores`` and training loops take)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .fisher import IGNORE_INDEX


def make_batches(
    tokenizer, texts: Sequence[str], batch_size: int, max_length: int = 256
) -> list[dict[str, torch.Tensor]]:
    """Tokenize ``texts`` and group them into right-padded batches.

    Each batch has ``input_ids`` and ``attention_mask`` (B, T) and ``labels`` (B, T) equal to the ids with
    IGNORE_INDEX at padding, so the loss covers every real token.
    """
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    batches = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, IGNORE_INDEX)
        batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    return batches
