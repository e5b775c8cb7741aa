"""Per-layer diagonal Fisher scores for FoRA's layer selection (paper Eq. 2, GUIDE section 1).

For decoder block l with base parameters Theta_l (attention, MLP and norms) and N mini-batches,

    F_l = (1/N) * sum_{n=1..N} sum_{theta in Theta_l} (dL_n / dtheta)^2

where L_n is the mean token cross-entropy of mini-batch n: on the observed labels (empirical Fisher) or
on labels sampled from the model's own predictive distribution (true Fisher). Dropout is off.

Memory: gradients are never all held at once. Each parameter's gradient is reduced to a scalar by a
``register_post_accumulate_grad_hook`` as soon as autograd has accumulated it, then freed, so the peak is
that of a forward + backward plus one parameter's gradient. Parameters outside the decoder blocks
(embeddings, final norm, LM head) get no gradient at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .architecture import find_decoder_layers
from .config import FISHER_ESTIMATORS, ForaConfigError
from .memory import PeakMemory

IGNORE_INDEX = -100


@dataclass
class FisherReport:
    """Result of a Fisher calibration pass.

    scores[l] is F_l for decoder layer l; ranking lists layer indices by decreasing score.
    """

    scores: list[float]
    num_batches: int
    tokens_seen: int
    seconds: float
    peak_memory_bytes: int
    peak_memory_kind: str
    estimator: str = "empirical"
    model_name: str = ""
    layers_prefix: str = ""
    ranking: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ranking:
            self.ranking = sorted(range(len(self.scores)), key=lambda i: (-self.scores[i], i))

    @property
    def num_layers(self) -> int:
        return len(self.scores)

    def top(self, k: int) -> list[int]:
        """The k highest-scoring layer indices, sorted by layer index."""
        return sorted(self.ranking[:k])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FisherReport:
        return cls(**json.loads(Path(path).read_text()))


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy. logits: (B, T, V); labels: (B, T), IGNORE_INDEX where masked.

    Position t predicts labels[t + 1]; the labels are shifted (not the logits) so the (B, T, V) logits are
    never copied.
    """
    shift_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:].reshape(-1)
    flat = logits.reshape(-1, logits.shape[-1])
    if flat.dtype != torch.float32:
        flat = flat.float()
    return F.cross_entropy(flat, shift_labels, ignore_index=IGNORE_INDEX)


def _sample_labels(logits: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """True-Fisher labels: y_t ~ softmax(logits_{t-1}) at every position the observed labels keep."""
    probs = torch.softmax(logits.detach().float(), dim=-1)  # (B, T, V)
    flat = probs.reshape(-1, probs.shape[-1])
    drawn = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])  # (B, T)
    sampled = torch.full_like(labels, IGNORE_INDEX)
    keep = labels[:, 1:] != IGNORE_INDEX
    sampled[:, 1:] = torch.where(keep, drawn[:, :-1], torch.full_like(drawn[:, :-1], IGNORE_INDEX))
    return sampled


def _unpack(batch: Mapping[str, torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return batch, None, batch
    if "input_ids" not in batch:
        raise ForaConfigError("a calibration batch must be a tensor of token ids or a mapping with 'input_ids'")
    ids = batch["input_ids"]
    labels = batch.get("labels")
    if labels is None:
        labels = ids.masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX) if "attention_mask" in batch else ids
    return ids, batch.get("attention_mask"), labels


def _with_progress(batches: Iterable[Any], num_batches: int | None, progress: bool) -> Iterable[Any]:
    """``batches``, behind a tqdm bar when ``progress`` (its total: at most ``num_batches``)."""
    if not progress:
        return batches
    from tqdm.auto import tqdm

    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    if num_batches is not None:
        total = min(num_batches, total) if total is not None else num_batches
    return tqdm(batches, total=total, desc="Fisher calibration", unit="batch")


def _accumulate_batch(model: nn.Module, batch: Any, device: torch.device, estimator: str,
                      generator: torch.Generator | None, on_batch: Callable[[torch.Tensor | None], None] | None) -> int:
    """One forward and backward of ``batch``'s token-mean loss L_n (the gradient hooks add ||dL_n/dtheta||^2 to
    F_l); returns the batch's target tokens."""
    ids, mask, labels = _unpack(batch)
    ids, labels = ids.to(device), labels.to(device)
    mask = mask.to(device) if mask is not None else None
    if on_batch is not None:
        on_batch(mask)
    logits = model(input_ids=ids, attention_mask=mask).logits
    if estimator == "true":
        labels = _sample_labels(logits, labels.cpu(), generator).to(device)
    token_cross_entropy(logits, labels).backward()
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def fisher_scores(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor] | torch.Tensor],
    *,
    num_batches: int | None = None,
    estimator: str = "empirical",
    seed: int = 0,
    progress: bool = False,
    on_batch: Callable[[torch.Tensor | None], None] | None = None,
) -> FisherReport:
    """Score every decoder layer by its diagonal Fisher trace F_l (see module docstring).

    Args:
        model: a causal LM (transformers ``PreTrainedModel``), without adapters.
        batches: mini-batches, each a (B, T) tensor of token ids or a mapping with ``input_ids`` (B, T) and
            optionally ``attention_mask`` and ``labels`` (IGNORE_INDEX = -100 where the loss is masked).
        num_batches: use at most this many batches (default: all).
        estimator: 'empirical' (observed labels) or 'true' (labels sampled from the model).
        progress: show a tqdm progress bar.
        on_batch: called with each batch's attention mask (B, T) or None just before its forward, for hooks
            that ride on the same pass (FILet's ``KfacCollector.begin_batch``).

    The model's training mode and ``requires_grad`` flags are restored afterwards.
    """
    if estimator not in FISHER_ESTIMATORS:
        raise ForaConfigError(f"invalid value for 'fisher.estimator': {estimator!r} (allowed: {', '.join(FISHER_ESTIMATORS)})")
    layout = find_decoder_layers(model)
    device = next(model.parameters()).device
    layer_params = [[p for p in layer.parameters()] for layer in layout.layers]
    owner = {id(p): index for index, params in enumerate(layer_params) for p in params}

    was_training = model.training
    saved_flags = [(p, p.requires_grad) for p in model.parameters()]
    sums = torch.zeros(layout.num_layers, dtype=torch.float64, device=device)
    handles = []

    def reduce_and_free(param: torch.Tensor) -> None:
        # F_l accumulates ||dL_n/dtheta||^2 (a float32 dot, summed in float64); the gradient is dropped at once.
        flat = param.grad.detach().reshape(-1)
        if flat.dtype != torch.float32:
            flat = flat.float()
        sums[owner[id(param)]] += torch.dot(flat, flat)
        param.grad = None

    generator = torch.Generator(device="cpu").manual_seed(seed) if estimator == "true" else None
    n_used = tokens = 0
    start = time.perf_counter()
    peak = PeakMemory(device)
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(id(p) in owner)
        handles = [p.register_post_accumulate_grad_hook(reduce_and_free) for ps in layer_params for p in ps]
        with peak:
            for batch in _with_progress(batches, num_batches, progress):
                if num_batches is not None and n_used >= num_batches:
                    break
                tokens += _accumulate_batch(model, batch, device, estimator, generator, on_batch)
                n_used += 1
    finally:
        for h in handles:
            h.remove()
        for p, flag in saved_flags:
            p.requires_grad_(flag)
            p.grad = None
        model.train(was_training)
    if n_used == 0:
        raise ForaConfigError("Fisher calibration got no batches: the calibration split is empty")
    scores = (sums / n_used).tolist()
    return FisherReport(
        scores=scores,
        num_batches=n_used,
        tokens_seen=tokens,
        seconds=time.perf_counter() - start,
        peak_memory_bytes=peak.peak_bytes,
        peak_memory_kind=peak.kind,
        estimator=estimator,
        model_name=str(getattr(getattr(model, "config", None), "_name_or_path", "")),
        layers_prefix=layout.prefix,
    )
