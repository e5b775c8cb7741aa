"""Sequence packing: several token rows in one sequence, each keeping its own positions and attention.

A packed row is ``{"input_ids", "labels", "position_ids", "doc_lengths"}``: the documents' ids end to end,
their labels with the first token of every document set to -100 (in a row of its own that token is never
a target: nothing precedes it), and position ids restarting at 0 for every document. Given ``position_ids``
and no ``attention_mask``, transformers (``masking_utils.find_packed_sequence_indices``) gives every
document its own causal block: a block-diagonal mask for SDPA and eager attention, the varlen kernel for
flash-attention 2. So the loss of a packed sequence is, token by token, the loss of its documents apart.

Rows are placed best-fit decreasing (longest first, each into the open sequence with the least room that
fits it, ties by position), deterministic for a given input.
"""

from __future__ import annotations

import bisect

import torch

from fora_core.fisher import IGNORE_INDEX


def pack_rows(rows: list[dict], max_length: int) -> list[dict]:
    """Pack token rows (each at most ``max_length`` tokens) into as few sequences of ``max_length`` as
    best-fit decreasing finds. Every row appears in exactly one packed row, whole."""
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]["input_ids"]), i))
    bins: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, bin index), sorted
    for i in order:
        n = len(rows[i]["input_ids"])
        if n > max_length:
            raise ValueError(f"row {i} has {n} tokens, more than the packed length {max_length}")
        at = bisect.bisect_left(room, (n, -1))
        if at < len(room):
            free, b = room.pop(at)
        else:
            free, b = max_length, len(bins)
            bins.append([])
        bins[b].append(i)
        if free - n > 0:
            bisect.insort(room, (free - n, b))
    return [_join([rows[i] for i in members]) for members in bins]


def _join(docs: list[dict]) -> dict:
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for d in docs:
        n = len(d["input_ids"])
        ids.extend(d["input_ids"])
        labels.extend([IGNORE_INDEX] + list(d["labels"][1:]))
        positions.extend(range(n))
    return {"input_ids": ids, "labels": labels, "position_ids": positions,
            "doc_lengths": [len(d["input_ids"]) for d in docs]}


def collate_packed(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad packed rows to the longest: input_ids, labels, position_ids (B, T), no attention_mask.

    The padding tail of a row is one more document (positions 0, 1, ...; labels -100): it attends only to
    itself and is never a target."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    pos = torch.arange(width).repeat(len(rows), 1)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        pos[i, :n] = torch.tensor(r["position_ids"])
        pos[i, n:] = torch.arange(width - n)
    return {"input_ids": ids, "labels": labels, "position_ids": pos}
