"""A worker's training set-up: the device, the model with FoRA applied at the selected layers, the optimizer
(Cayley-Adam on the Stiefel factors, AdamW on the rest) and the learning-rate schedule."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from fora_core import apply_fora, create_fora_optimizer
from fora_core.memory import enable_activation_checkpointing

from ..runtime.models import model_source
from .calibration_artifacts import load_filet_energies
from .loop_config import LoopConfig


def lr_lambda(warmup: int, total: int):
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


@dataclass
class Parts:
    """What the loop trains: ``model`` (DDP-wrapped with several workers), ``inner`` (the PEFT model itself, for
    checkpoints and diagnostics), its tokenizer, optimizer, scheduler, device and autocast setting."""

    model: Any
    inner: Any
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    bf16: bool

    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.inner.parameters() if p.requires_grad]


def worker_device(loop: LoopConfig) -> torch.device:
    """This worker's GPU when the run asks for one and the worker has one, else the CPU."""
    if not (loop.run.train.use_gpu and torch.cuda.is_available()):
        return torch.device("cpu")
    if loop.where == "ray":
        import ray.train.torch  # [ray]

        return ray.train.torch.get_device()  # [ray]
    return torch.device("cuda")


def set_up(loop: LoopConfig, local_world: int, world: int) -> Parts:
    """Seed, threads, model (+ FILet energies when the method wants them), FoRA, DDP, optimizer, schedule."""
    run, tcfg = loop.run, loop.run.train
    torch.manual_seed(run.seed)
    torch.set_num_threads(tcfg.threads_per_worker or max(1, (os.cpu_count() or 1) // local_world))
    device = worker_device(loop)
    bf16 = tcfg.bf16 == "on" or (tcfg.bf16 == "auto" and device.type == "cuda")
    model, tokenizer = model_source(run).load(device, quantization=run.quantization)
    if tcfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    energies = None
    if run.fora.spec.init == "filet":  # FILet's per-module energies, from the same calibration pass
        if not loop.calib_dir:
            raise RuntimeError(f"method '{run.fora.method}' needs the calibration folder (its FILet energies)")
        energies = load_filet_energies(loop.calib_dir)
    inner = apply_fora(model, loop.layers, run.fora, filet_energies=energies)
    model = inner
    if loop.where == "ray" and world > 1:
        import ray.train.torch  # [ray]

        # DDP on the worker's own device: the one Ray Train assigned, or the CPU where the worker has no CUDA
        model = ray.train.torch.prepare_model(inner, move_to_device=device,
                                              parallel_strategy_kwargs={"find_unused_parameters": False})  # [ray]
    optimizer = create_fora_optimizer(inner, run.fora, lr=tcfg.lr, stiefel_lr=tcfg.stiefel_lr,
                                      weight_decay=tcfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tcfg.warmup_steps, tcfg.max_steps))
    return Parts(model, inner, tokenizer, optimizer, scheduler, device, bf16)
