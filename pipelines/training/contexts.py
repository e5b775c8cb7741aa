"""Where the training loop runs, behind one small interface (rank, world, ``report``, ``latest_checkpoint``):

* :class:`LocalContext`: in-process, no Ray; checkpoints to the run's namespace folder or S3 prefix;
* :class:`RayContext`: a Ray Train worker; reports and checkpoints through ``ray.train``;
* :class:`TuneContext`: a single-worker sweep trial in the Tune trial's own process.

``loop.py``'s loop is the same in all three; :func:`context_for` picks one from ``LoopConfig.where``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from ..runtime import checkpoints, storage
from ..runtime.metric_buffer import BufferedMetricLogger, mlflow_sender
from .loop_config import LoopConfig


class Context(Protocol):
    rank: int
    world: int
    local_world: int

    def sum_over_workers(self, value: float) -> float: ...

    def replica_spread(self, params: list) -> float: ...

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None: ...

    def latest_checkpoint(self, scratch: Path) -> str | None: ...


class SingleWorker:
    """Collectives of a world of one: nothing to combine."""

    @staticmethod
    def sum_over_workers(value: float) -> float:
        return value

    @staticmethod
    def replica_spread(params: list) -> float:
        return 0.0


class LocalContext(SingleWorker):
    """Stands in for Ray Train's context when the loop runs in-process (no Ray): checkpoints go to the
    namespace folder (or S3 prefix) as ``checkpoint_step_<n>``, each written whole or not at all."""

    def __init__(self, storage_path: str, resume_from: str | None = None) -> None:
        self.storage = storage_path
        self.resume_from = resume_from

    rank = 0
    world = 1
    local_world = 1

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        if checkpoint_dir:
            storage.copy_to(checkpoint_dir, storage.join(self.storage, f"checkpoint_step_{metrics['step']:06d}"))

    def latest_checkpoint(self, scratch: Path) -> str | None:
        found = checkpoints.latest(self.storage)
        location = found["checkpoint"] if found else self.resume_from
        return str(storage.localize(location, scratch / "resume")) if location else None


class RayContext:
    def __init__(self, resume_from: str | None = None) -> None:
        self.resume_from = resume_from
        import ray.train  # [ray]
        from ray.train.v2._internal.execution import context as ray_context  # [ray]

        # Ray Train logs every report at INFO under the module's file name; our progress bar says it already
        logging.getLogger(ray_context.__file__).setLevel(logging.WARNING)

        self._train = ray.train
        ctx = ray.train.get_context()  # [ray]
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.local_world = ctx.get_local_world_size()

    def sum_over_workers(self, value: float) -> float:
        """``value`` summed over the worker group (a gloo/NCCL all-reduce; every worker gets the total)."""
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return float(t.item())

    def replica_spread(self, params: list) -> float:
        """max |p_w - p_v| over every trainable element and every pair of workers w, v (0.0: every worker
        holds bit-identical parameters), from an all-reduce MAX and MIN of the flattened parameters."""
        if self.world == 1:
            return 0.0
        import torch
        import torch.distributed as dist

        flat = torch.cat([p.detach().reshape(-1).float() for p in params]).to(_collective_device())
        hi, lo = flat.clone(), flat.clone()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        return float((hi - lo).max().item())

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        ckpt = self._train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self._train.report(metrics, checkpoint=ckpt)  # [ray]

    def latest_checkpoint(self, scratch: Path) -> str | None:
        ckpt = self._train.get_checkpoint()  # [ray] after a worker failure, or restored from the run's storage
        if ckpt is not None:
            return ckpt.to_directory(str(scratch / "resume"))
        # the driver found an unfinished checkpoint of this very run (same namespace and fingerprint)
        return str(storage.localize(self.resume_from, scratch / "resume")) if self.resume_from else None


class TuneContext(SingleWorker):
    """A single-worker sweep trial runs the loop in the Tune trial's own process (no Ray Train worker group,
    see ``sweep/trials.py``'s ``trial_driver``): reports and checkpoints go straight to Tune, which restores the trial's
    last checkpoint after a failure or a resumed sweep."""

    rank = 0
    world = 1
    local_world = 1

    def __init__(self) -> None:
        from ray import tune  # [ray]

        self._tune = tune

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        ckpt = self._tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self._tune.report(metrics, checkpoint=ckpt)  # [ray]

    def latest_checkpoint(self, scratch: Path) -> str | None:
        ckpt = self._tune.get_checkpoint()  # [ray]
        return ckpt.to_directory(str(scratch / "resume")) if ckpt is not None else None


def _collective_device():
    """Where a collective's tensor must live: the GPU under NCCL, the CPU under gloo."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def context_for(loop: LoopConfig) -> Context:
    if loop.where == "tune":
        return TuneContext()
    if loop.where == "ray":
        return RayContext(loop.resume_from)
    return LocalContext(loop.storage, loop.resume_from)


def metric_logger(loop: LoopConfig, rank: int) -> BufferedMetricLogger | None:
    """Step metrics to the driver's MLflow run (rank 0 only), buffered: an MLflow outage never stops training."""
    if rank != 0 or not loop.mlflow_run_id:
        return None
    return BufferedMetricLogger(mlflow_sender(loop.tracking_uri, loop.mlflow_run_id),
                                flush_timeout_s=loop.metrics_flush_timeout_s)
