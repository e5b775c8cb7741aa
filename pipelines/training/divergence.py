"""Divergence: a non-finite loss, gradient or parameter stops training at that step, before anything of it is
saved. The last checkpoint (every one was finite when it was written) stays; no adapter is written and nothing
is registered; the sweep and the ablation mark the trial ``diverged`` and go on.

Checked every step on the trainable (adapter) parameters only, so the cost is a few norms of the adapter's
tensors: the loss summed over the micro-batches, the global gradient norm before the optimizer step (after
DDP's all-reduce, so every worker decides alike) and the parameters' norm after it (a finite gradient times a
huge learning rate can still overflow them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import torch

from fora_core import STIEFEL_METHODS

from ..config.errors import TrainingDiverged
from ..runtime import storage


def _norm(tensors: list[torch.Tensor]) -> float:
    if not tensors:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([t.detach().float().norm() for t in tensors])))


def gradient_problem(loss: float, params: Iterable[torch.nn.Parameter]) -> str | None:
    """Why this step must not be applied (``'loss nan'``, ``'gradient norm inf'``), or None."""
    if not math.isfinite(loss):
        return f"loss {loss}"
    grad = _norm([p.grad for p in params if p.grad is not None])
    return None if math.isfinite(grad) else f"gradient norm {grad}"


def parameter_problem(params: Iterable[torch.nn.Parameter]) -> str | None:
    """``'adapter parameters inf'`` when the step just taken left a non-finite value, else None."""
    norm = _norm(list(params))
    return None if math.isfinite(norm) else f"adapter parameters' norm {norm} after the update"


REPLICA_TOLERANCE = 1e-5


def replica_problem(spread: float) -> str | None:
    """A message when the workers' adapters differ by more than REPLICA_TOLERANCE (DDP applies the same
    all-reduced gradient on every worker, and Cayley-Adam's step is deterministic, so they should not)."""
    if spread > REPLICA_TOLERANCE:
        return (f"the workers' adapters differ by up to {spread:.3g} (tolerance {REPLICA_TOLERANCE:g}): "
                "the data-parallel replicas drifted apart")
    return None


def explain(run_dict: dict, step: int, problem: str, last_checkpoint: int | None, where: str = "") -> str:
    """The one line a user reads: the step, what was non-finite, the likely cause and what was kept."""
    fora, train = run_dict["fora"], run_dict["train"]
    lrs = f"train.lr={train['lr']:g}" + (f", train.stiefel_lr={train['stiefel_lr']:g}"
                                         if fora["method"] in STIEFEL_METHODS else "")
    kept = (f"the last finite checkpoint (step {last_checkpoint}) is kept{' in ' + where if where else ''}"
            if last_checkpoint else "no checkpoint was written before it")
    return (f"training diverged at step {step}: {problem}. Likely cause: the learning rate ({lrs}) is too high "
            f"for method '{fora['method']}'; lower it (or raise train.warmup_steps) and run again. {kept}; no "
            "adapter was saved and nothing was registered")


MARKER = "diverged.json"
"""Written into the run's checkpoint namespace by a Ray Train worker that stopped on divergence: Ray Train's
result carries the metrics of the last checkpoint only, so the driver reads this instead."""


def write_marker(namespace: str, report: dict) -> None:
    text = json.dumps(report)
    if storage.is_uri(namespace):
        storage.write_text(storage.join(namespace, MARKER), text)
    else:
        Path(namespace).mkdir(parents=True, exist_ok=True)
        (Path(namespace) / MARKER).write_text(text)


def take_marker(namespace: str) -> dict | None:
    """The marker's report, removed as it is read (a rerun starts without it), or None."""
    where = storage.join(namespace, MARKER)
    if storage.is_uri(namespace):
        if not storage.exists(where):
            return None
        report = json.loads(storage.read_text(where))
        target = storage.S3Uri.parse(where)
        storage.s3_client().delete_object(Bucket=target.bucket, Key=target.key)
        return report
    path = Path(namespace) / MARKER
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    path.unlink()
    return report


def raise_if_diverged(report: dict | None, run_dict: dict, where: str = "") -> None:
    """Raise :class:`TrainingDiverged` when the training loop's last report says it stopped on divergence."""
    if report and report.get("diverged"):
        raise TrainingDiverged(explain(run_dict, int(report["step"]), report.get("problem", "non-finite values"),
                                       report.get("last_checkpoint"), where))
