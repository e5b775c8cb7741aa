"""The validation loss: mean cross-entropy over the response tokens of the validation split."""

from __future__ import annotations

import torch

from fora_core.fisher import IGNORE_INDEX

from ..data.tokens import collate


@torch.no_grad()
def mean_response_loss(model, rows: list[dict], pad_id: int, batch_size: int = 8) -> float:
    """Mean token cross-entropy over the unmasked (response) tokens of ``rows``; the caller sets eval mode.

    Rows are batched longest first, so each batch pads to nearly its own length (on instruction rows of mixed
    length this runs less than half the padded tokens of file order); the mean is over all tokens, so the
    order does not change it."""
    device = next(model.parameters()).device
    rows = sorted(rows, key=lambda r: -len(r["input_ids"]))
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        b = {k: v.to(device) for k, v in collate(rows[i : i + batch_size], pad_id).items()}
        n = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += model(**b).loss.item() * n
        count += n
    return total / max(1, count)


def validation_loss(model, rows: list[dict], pad_id: int, batch_size: int = 8) -> float:
    """:func:`mean_response_loss` in eval mode (dropout off); the model is back in train mode after."""
    model.eval()
    loss = mean_response_loss(model, rows, pad_id, batch_size)
    model.train()
    return loss
