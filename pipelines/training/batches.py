"""What each worker trains on at a step, and the loss normalisation that makes W workers equal one.

Step s of a run with global batch G = batch_size x grad_accum x W (W workers):

* the G row indices are a function of s alone (``batch_indices``: epoch e is permutation Random(seed + e));
* worker w takes every W-th of them (``worker_share``: idx[w::W]), so the shards are disjoint and together
  are the global batch; micro-batch m of a worker is its rows [m*b, (m+1)*b);
* the loss of a micro-batch is its sum of token cross-entropies divided by N, the number of target tokens
  of the whole global batch (every worker counts it from the same rows, no communication), times W because
  DDP averages the workers' gradients:

      grad = (1/W) sum_w W * sum_{tokens t of worker w} grad l_t / N = sum_{all t} grad l_t / N,

  the gradient of the global batch's token-mean loss, whatever W and grad_accum are. (A mean per
  micro-batch, then averaged, weights a short micro-batch's tokens more: W workers would not equal one.)
"""

from __future__ import annotations

import functools
import random

import torch

from fora_core.fisher import IGNORE_INDEX

from ..data.packing import collate_packed, pack_rows
from ..data.tokens import collate


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n_rows: int, seed: int) -> tuple[int, ...]:
    perm = list(range(n_rows))
    random.Random(seed).shuffle(perm)
    return tuple(perm)


def batch_indices(step: int, global_batch: int, n_rows: int, seed: int) -> list[int]:
    """Row indices of the global batch at ``step``: epoch e uses permutation Random(seed + e)."""
    out = []
    for pos in range(step * global_batch, (step + 1) * global_batch):
        epoch, offset = divmod(pos, n_rows)
        out.append(_epoch_permutation(n_rows, seed + epoch)[offset])
    return out


def worker_share(idx: list[int], rank: int, world: int) -> list[int]:
    """Worker ``rank``'s rows of a global batch: every ``world``-th, starting at ``rank``."""
    return idx[rank::world]


def target_tokens(row: dict) -> int:
    """Tokens of a row that are targets after the causal shift (labels[1:] != -100)."""
    return sum(1 for x in row["labels"][1:] if x != IGNORE_INDEX)


def training_rows(rows: list[dict], packing: bool, max_length: int) -> list[dict]:
    """The rows training draws batches from: as read, or packed to ``max_length`` tokens per sequence."""
    return pack_rows(rows, max_length) if packing else rows


def make_batch(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Model inputs of a micro-batch: padded with an attention mask, or packed with position ids."""
    if rows and "position_ids" in rows[0]:
        return collate_packed(rows, pad_id)
    return collate(rows, pad_id)


def real_tokens(rows: list[dict]) -> int:
    """Tokens of the micro-batch that are not padding."""
    return sum(len(r["input_ids"]) for r in rows)
