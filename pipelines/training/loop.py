"""One worker's training loop: set up -> resume -> fit, with validation every ``train.eval_every`` steps.

``train_loop_per_worker(config)`` is the function a Ray ``TorchTrainer`` runs on each worker (``config`` is
``{"loop": LoopConfig}``); the train step runs it in-process too, and a one-worker sweep trial runs it in the Tune
trial's own process. Ray-specific lines are marked ``# [ray]``.

Data order is a function of the step alone (a seeded permutation per epoch, ``batches.py``), so a run resumed
from a checkpoint at step s continues with exactly the batches it would have seen: no step lost or repeated.
Checkpoints (every ``train.checkpoint_every`` steps and at the end, ``checkpoint_state.py``) go to the run's own
namespace under ``train.checkpoint_dir`` (``runtime/checkpoints.py``). A worker failure restarts from the latest
one (Ray Train's ``FailureConfig``); re-running the same run (same config, data and layers) resumes from it too;
any other run starts fresh.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fora_core import max_orthogonality_error

from ..data.jsonl import read_jsonl
from ..runtime import interruption, rng_state, storage
from . import divergence
from .batches import batch_indices, make_batch, real_tokens, target_tokens, training_rows, worker_share
from .checkpoint_choice import BEST_ADAPTER_DIR, Choice
from .checkpoint_state import Resumed, resume, save_checkpoint
from .contexts import Context, context_for
from .guard_measures import GuardMeasures
from .loop_config import LoopConfig
from .progress import Progress
from .setup import Parts, set_up
from .validation import validation_loss


def train_loop_per_worker(config: dict[str, Any] | LoopConfig) -> dict | None:
    """Per-worker FoRA training; returns the last report when training stopped on divergence (``divergence.py``),
    else None."""
    loop = LoopConfig.of(config)
    scratch = Path(tempfile.mkdtemp(prefix="fora-worker-"))
    try:
        ctx = context_for(loop)
        parts = set_up(loop, ctx.local_world, ctx.world)
        start = resume(ctx.latest_checkpoint(scratch), loop, parts.inner, parts.optimizer, parts.scheduler,
                       ctx.rank, ctx.world)
        return fit(loop, ctx, parts, TrainingData.read(loop, scratch), start, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class TrainingData:
    """The training rows (packed when ``data.packing``), their target-token counts, and the validation rows (the
    first ``train.eval_rows`` when set)."""

    rows: list[dict]
    targets: list[int]
    validation: list[dict]

    @staticmethod
    def read(loop: LoopConfig, scratch: Path) -> TrainingData:
        data_dir = storage.localize(loop.data_dir, scratch / "data")
        rows = training_rows(read_jsonl(data_dir / "train.jsonl"), loop.run.data.packing, loop.run.data.max_length)
        # per row, once: every step sums them over its global batch
        validation = read_jsonl(data_dir / "validation.jsonl")
        if loop.run.train.eval_rows:
            validation = validation[: loop.run.train.eval_rows]
        return TrainingData(rows, [target_tokens(r) for r in rows], validation)


@dataclass
class FitState:
    """What the loop carries from step to step."""

    history: list[dict]
    last_saved: int | None
    choice: Choice
    last_val: float | None = None  # a sweep reports the latest validation loss at every step
    val_seconds: float = 0.0  # validation time, reported with the next step
    stopped_early: bool = False


def fit(loop: LoopConfig, ctx: Context, parts: Parts, data: TrainingData, start: Resumed, scratch: Path) -> dict | None:
    """Steps ``start.step`` .. ``train.max_steps``; returns the stopping report on divergence, else None."""
    tcfg = loop.run.train
    state = FitState(history=start.history, last_saved=start.step or None, choice=Choice.replay(loop.run, start.history),
                     last_val=next((h["val_loss"] for h in reversed(start.history) if "val_loss" in h), None))
    measures = GuardMeasures.for_loop(loop, parts, scratch)
    if start.path and (Path(start.path) / BEST_ADAPTER_DIR).is_dir():  # the best so far, carried by the checkpoint
        shutil.copytree(Path(start.path) / BEST_ADAPTER_DIR, scratch / BEST_ADAPTER_DIR, dirs_exist_ok=True)
    pad_id = parts.tokenizer.pad_token_id
    if loop.report_val_loss_every_step and state.last_val is None:  # Tune compares trials from the first report
        t_val = time.perf_counter()
        state.last_val = validation_loss(parts.model, data.validation, pad_id)
        state.val_seconds = time.perf_counter() - t_val
    parts.model.train()
    with Progress(loop, ctx, start) as progress:
        for step in range(start.step, tcfg.max_steps):
            for hook in loop.hooks:
                hook.before_step(step, start.path is not None)
            t0 = time.perf_counter()
            loss_sum, tokens = forward_backward(loop, ctx, parts, data, step)
            problem = divergence.gradient_problem(loss_sum, parts.trainable)
            if problem is None:
                parts.optimizer.step()
                problem = divergence.parameter_problem(parts.trainable)
            if problem is not None:  # nothing of this step is kept: report it and stop (no checkpoint)
                return stop_diverged(loop, ctx, state, step, loss_sum, problem, progress)
            parts.scheduler.step()
            parts.optimizer.zero_grad(set_to_none=True)
            metrics = step_metrics(loop, ctx, parts, step + 1, loss_sum, tokens, time.perf_counter() - t0)
            validate_if_due(loop, ctx, parts, data, state, metrics, measures)
            state.history.append(metrics)
            progress.step(metrics)
            state.stopped_early = "val_loss" in metrics and ctx.sum_over_workers(float(state.choice.should_stop())) > 0
            checkpoint = checkpoint_if_due(loop, ctx, parts, state, metrics["step"], scratch)
            interruption.progress(step=metrics["step"])
            ctx.report(reported(loop, state, metrics), checkpoint)
            if checkpoint:
                shutil.rmtree(checkpoint, ignore_errors=True)
            if state.stopped_early:
                progress.say(state.choice.summary(metrics["step"], tcfg.max_steps, True)["reason"])
                break
    return None


def forward_backward(loop: LoopConfig, ctx: Context, parts: Parts, data: TrainingData, step: int) -> tuple[float, int]:
    """This worker's share of step ``step``'s global batch, ``train.grad_accum`` micro-batches of
    ``train.batch_size`` rows; gradients accumulate. Returns (the loss summed over every worker, real tokens of
    this worker)."""
    tcfg, device = loop.run.train, parts.device
    per_worker = tcfg.batch_size
    idx = batch_indices(step, per_worker * tcfg.grad_accum * ctx.world, len(data.rows), loop.run.data.seed)
    mine = worker_share(idx, ctx.rank, ctx.world)
    # sum of token losses / the global batch's target tokens, x W for DDP's mean (batches.py)
    n_targets = torch.tensor(max(1, sum(data.targets[i] for i in idx)), device=device)
    pad_id = parts.tokenizer.pad_token_id
    loss_sum, tokens = 0.0, 0
    for micro in range(tcfg.grad_accum):
        chunk = [data.rows[i] for i in mine[micro * per_worker : (micro + 1) * per_worker]]
        batch = {k: v.to(device) for k, v in make_batch(chunk, pad_id).items()}
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=parts.bf16):
            # use_cache=False: no KV cache in training (and with one, transformers ignores packing)
            loss = parts.model(**batch, num_items_in_batch=n_targets, use_cache=False).loss
        for hook in loop.hooks:
            loss = hook.on_loss(step, loss)
        (loss * ctx.world).backward()
        loss_sum += loss.item()
        tokens += real_tokens(chunk)
    return ctx.sum_over_workers(loss_sum), tokens


def step_metrics(loop: LoopConfig, ctx: Context, parts: Parts, done: int, loss: float, tokens: int,
                 seconds: float) -> dict:
    """step, loss, lr, throughput, timing; Stiefel methods add their lr and the orthogonality error of B."""
    metrics = {"step": done, "loss": loss, "lr": parts.optimizer.param_groups[0]["lr"],
               "tokens_per_s": tokens * ctx.world / seconds, "step_seconds": seconds,
               "step_started": time.time() - seconds}
    fora = loop.run.fora
    if fora.uses_stiefel:
        metrics["stiefel_lr"] = parts.optimizer.param_groups[-1]["lr"]
        metrics["orthogonality_error"] = max_orthogonality_error(parts.inner, fora.stiefel.factor)
    return metrics


def validate_if_due(loop: LoopConfig, ctx: Context, parts: Parts, data: TrainingData, state: FitState,
                    metrics: dict, measures: GuardMeasures) -> None:
    """Every ``train.eval_every`` steps and at the last: the replicas' agreement (several workers), the
    validation loss and the guard metrics measured in training (``guard_measures.py``), into ``metrics``; the
    checkpoint choice considers the point (``checkpoint_choice.py``). The validation time rides on the next
    step's metrics."""
    done, tcfg = metrics["step"], loop.run.train
    if done % tcfg.eval_every == 0 or done == tcfg.max_steps:
        if ctx.world > 1:  # DDP keeps replicas equal; a spread means a broken collective or kernel
            metrics["replica_spread"] = ctx.replica_spread(parts.trainable)
            problem = divergence.replica_problem(metrics["replica_spread"])
            if problem is not None:
                raise RuntimeError(f"step {done}: {problem}")
        t_val = time.perf_counter()
        metrics["val_loss"] = validation_loss(parts.model, data.validation, parts.tokenizer.pad_token_id)
        measures.add_to(metrics, state.choice, data.validation)
        if state.choice.consider(metrics) and ctx.rank == 0:
            measures.keep_best(loop)
        state.val_seconds += time.perf_counter() - t_val
    metrics["val_seconds"], state.val_seconds = state.val_seconds, 0.0


def checkpoint_if_due(loop: LoopConfig, ctx: Context, parts: Parts, state: FitState, done: int,
                      scratch: Path) -> str | None:
    """Every ``train.checkpoint_every`` steps and at the last: rank 0 writes a checkpoint folder (returned, for
    the context to store); every worker contributes its random-number state."""
    tcfg = loop.run.train
    if not (done % tcfg.checkpoint_every == 0 or done == tcfg.max_steps or state.stopped_early):
        return None
    rng = rng_state.gather(ctx.world)  # every worker's generators (a collective)
    folder = None
    if ctx.rank == 0:
        folder = tempfile.mkdtemp(prefix="ckpt-", dir=scratch)
        choice = state.choice.summary(done, tcfg.max_steps, state.stopped_early)
        save_checkpoint(Path(folder), parts.inner, loop, parts.optimizer, parts.scheduler, done, state.history, rng,
                        choice=choice, best_adapter=scratch / BEST_ADAPTER_DIR)
    state.last_saved = done
    return folder


def reported(loop: LoopConfig, state: FitState, metrics: dict) -> dict:
    """What the context reports: the step's metrics; a sweep adds the latest validation loss, whether it was
    measured at this step, and the run's length (Tune's schedulers compare trials on every report)."""
    out = dict(metrics)
    if loop.report_val_loss_every_step:
        state.last_val = metrics.get("val_loss", state.last_val)
        out.update(val_loss=state.last_val, val_fresh="val_loss" in metrics, max_steps=loop.run.train.max_steps)
    return out


def stop_diverged(loop: LoopConfig, ctx: Context, state: FitState, step: int, loss: float, problem: str,
                  progress: Progress) -> dict:
    """Report the divergence (no checkpoint), leave the marker for a Ray driver, say why; the stopping report."""
    stopped = {"step": step + 1, "loss": loss, "diverged": 1, "problem": problem, "last_checkpoint": state.last_saved,
               "val_loss": state.last_val if loop.report_val_loss_every_step else None}
    ctx.report({k: v for k, v in stopped.items() if v is not None}, None)
    if loop.where == "ray" and ctx.rank == 0 and loop.namespace:
        divergence.write_marker(loop.namespace, stopped)
    progress.say(divergence.explain(loop.run.to_dict(), step + 1, problem, state.last_saved))
    return stopped
