"""Token rows for training and scoring: an instruction example as ids and labels, and right-padded batches.

A row is ``{"input_ids": [int], "labels": [int]}``: labels equal the ids on the response (or assistant)
tokens and ``-100`` (``IGNORE_INDEX``) elsewhere, so the loss is on the response only.
"""

from __future__ import annotations

import torch

from fora_core.fisher import IGNORE_INDEX

from .sources import Example


def tokenize_example(tokenizer, ex: Example, max_length: int) -> dict[str, list[int]] | None:
    """input_ids = prompt + response + eos; labels = -100 on the prompt. None when it does not fit."""
    prompt_ids = tokenizer(ex.prompt)["input_ids"] if ex.prompt else []
    if not prompt_ids and tokenizer.bos_token_id is not None:
        prompt_ids = [tokenizer.bos_token_id]
    response_ids = tokenizer(ex.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = prompt_ids + response_ids
    if len(ids) > max_length or len(response_ids) < 2:
        return None
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids}


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token rows to the longest: input_ids, attention_mask, labels (B, T)."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
