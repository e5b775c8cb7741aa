"""The one place a Ray Train ``TorchTrainer`` is built, for the train step and for every multi-worker sweep
trial: the workers (``train.num_workers`` x ``train.cpus_per_worker``, GPUs when ``train.use_gpu``, placed by
``train.placement_strategy``), the collective backend (``train.backend``), the run's storage and its failure
budget (``train.max_failures``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config.run_config import RunConfig, TrainConfig
from ..runtime import storage
from .loop import train_loop_per_worker
from .loop_config import LoopConfig


def collective_backend(train: TrainConfig) -> str:
    """``train.backend``; ``auto`` is NCCL on GPUs and gloo on CPUs (what Ray Train's TorchConfig would pick)."""
    if train.backend != "auto":
        return train.backend
    return "nccl" if train.use_gpu else "gloo"


def build_torch_trainer(run: RunConfig, loop: LoopConfig, name: str, storage_root: str,
                        callbacks: Sequence[Any] = (), keep_checkpoints: int | None = None):
    """A ``TorchTrainer`` running :func:`train_loop_per_worker` on ``loop`` under ``storage_root/name`` (a folder or
    an s3:// URI, through Ray's storage filesystem). A run of the same name and storage resumes its checkpoints."""
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig  # [ray]
    from ray.train import RunConfig as RayRunConfig  # [ray]
    from ray.train.torch import TorchConfig, TorchTrainer  # [ray]

    tcfg = run.train
    storage_path, filesystem = storage.ray_storage(storage_root)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop.for_ray(),
        scaling_config=ScalingConfig(num_workers=tcfg.num_workers, use_gpu=tcfg.use_gpu,
                                     resources_per_worker={"CPU": tcfg.cpus_per_worker},
                                     placement_strategy=tcfg.placement_strategy),
        torch_config=TorchConfig(backend=collective_backend(tcfg)),
        run_config=RayRunConfig(name=name, storage_path=storage_path, storage_filesystem=filesystem,
                                failure_config=FailureConfig(max_failures=tcfg.max_failures),
                                checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
                                callbacks=list(callbacks)),  # [ray]
    )
