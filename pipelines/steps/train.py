"""Step 3, train: FoRA at the selected layers, as a Ray Train ``TorchTrainer`` job (or in-process).

``train_loop_per_worker(config)`` is the per-worker function (Ray-specific lines marked ``# [ray]``). It is
used unchanged by the train step and by a Ray Tune sweep (a driver per trial builds a TorchTrainer around
it). Data order is a function of the step alone (a seeded permutation per epoch), so a run resumed from a
checkpoint at step s continues with exactly the batches it would have seen: no step lost or repeated.

Checkpoints (every ``train.checkpoint_every`` steps and at the end) hold the PEFT adapter, the optimizer
and scheduler states and the step. They go to ``train.checkpoint_dir`` (a folder or an s3:// URI, via Ray's
storage). A worker failure restarts from the latest one (``FailureConfig``); re-running the same run
resumes from it too.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fora_core import (
    ForaConfig,
    ModelSource,
    apply_fora,
    create_fora_optimizer,
    max_orthogonality_error,
    save_adapter,
)

from ..run_config import RunConfig
from .calibrate import collate, mean_response_loss
from .data_prep import read_jsonl

ADAPTER_DIR = "adapter"
STATE_FILE = "trainer_state.pt"


def lr_lambda(warmup: int, total: int):
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


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


class _LocalContext:
    """Stands in for Ray Train's context when the loop runs in-process (no Ray)."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.last_checkpoint: str | None = None

    rank = 0
    world = 1
    local_world = 1

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        if checkpoint_dir:
            target = self.storage / f"checkpoint_step_{metrics['step']:06d}"
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(checkpoint_dir, target)
            self.last_checkpoint = str(target)

    def latest_checkpoint(self) -> str | None:
        found = sorted(self.storage.glob("checkpoint_step_*"))
        return str(found[-1]) if found else None


def latest_local_checkpoint(run_dir: str | Path) -> str | None:
    """The newest checkpoint folder (holding a trainer state) under a local Ray run directory."""
    found = [p for p in Path(run_dir).glob("checkpoint_*") if (p / STATE_FILE).exists()]
    return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None


class _RayContext:
    def __init__(self, run_dir: str | None = None) -> None:
        self.run_dir = run_dir
        import ray.train  # [ray]
        from ray.train.v2._internal.execution import context as ray_context  # [ray]

        # Ray Train logs every report at INFO under the module's file name; our progress bar says it already
        logging.getLogger(ray_context.__file__).setLevel(logging.WARNING)

        self._train = ray.train
        ctx = ray.train.get_context()  # [ray]
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.local_world = ctx.get_local_world_size()

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        ckpt = self._train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self._train.report(metrics, checkpoint=ckpt)  # [ray]

    def latest_checkpoint(self) -> str | None:
        ckpt = self._train.get_checkpoint()  # [ray] set after a worker failure or on a resumed run
        if ckpt is None:  # a re-run of the same run: pick up its newest checkpoint from local storage
            return latest_local_checkpoint(self.run_dir) if self.run_dir else None
        local = tempfile.mkdtemp(prefix="fora-resume-")
        return ckpt.to_directory(local)


def _mlflow_logger(config: dict, rank: int):
    """A step-metric logger writing to the driver's MLflow run (rank 0 only), or a no-op."""
    if rank != 0 or not config.get("mlflow_run_id"):
        return lambda metrics, step: None
    import mlflow

    client = mlflow.tracking.MlflowClient(config["tracking_uri"])
    run_id = config["mlflow_run_id"]

    def log(metrics: dict, step: int) -> None:
        ts = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(f"train/{k}", float(v), ts, step)
                                          for k, v in metrics.items()])
    return log


def validation_loss(model, rows: list[dict], pad_id: int, device=None, batch_size: int = 8) -> float:
    model.eval()
    loss = mean_response_loss(model, rows, pad_id, batch_size)
    model.train()
    return loss


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Per-worker FoRA training. ``config``: run (RunConfig dict), data_dir, layers, use_ray, storage,
    tracking_uri, mlflow_run_id, progress, fail_at_step (tests)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    run = RunConfig.from_dict(config["run"])
    tcfg = run.train
    ctx = _RayContext(config.get("ray_run_dir")) if config.get("use_ray") else _LocalContext(Path(config["storage"]))
    torch.manual_seed(run.seed)
    torch.set_num_threads(tcfg.threads_per_worker or max(1, (os.cpu_count() or 1) // ctx.local_world))
    use_gpu = tcfg.use_gpu and torch.cuda.is_available()
    if use_gpu and config.get("use_ray"):
        import ray.train.torch  # [ray]

        device = ray.train.torch.get_device()  # [ray]
    else:
        device = torch.device("cuda" if use_gpu else "cpu")
    bf16 = tcfg.bf16 == "on" or (tcfg.bf16 == "auto" and use_gpu)

    model, tokenizer = ModelSource(run.model, dtype=run.dtype).load(device)
    fora: ForaConfig = run.fora
    model = apply_fora(model, config["layers"], fora)
    inner = model
    if config.get("use_ray") and ctx.world > 1:
        import ray.train.torch  # [ray]

        model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": False})  # [ray]
    optimizer = create_fora_optimizer(inner, fora, lr=tcfg.lr, stiefel_lr=tcfg.stiefel_lr,
                                      weight_decay=tcfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tcfg.warmup_steps, tcfg.max_steps))

    start_step = 0
    history: list[dict] = []
    resume = ctx.latest_checkpoint()
    if resume:
        state = torch.load(Path(resume) / STATE_FILE, weights_only=False)
        set_peft_model_state_dict(inner, load_file(str(Path(resume) / ADAPTER_DIR / "adapter_model.safetensors")))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step = state["step"]
        history = state.get("history", [])

    rows = read_jsonl(Path(config["data_dir"]) / "train.jsonl")
    val_rows = read_jsonl(Path(config["data_dir"]) / "validation.jsonl")
    pad_id = tokenizer.pad_token_id
    per_worker = tcfg.batch_size
    global_batch = per_worker * tcfg.grad_accum * ctx.world
    log = _mlflow_logger(config, ctx.rank)
    bar = None
    if config.get("progress") and ctx.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=tcfg.max_steps, initial=start_step, desc=f"training ({fora.method})", unit="step")

    # A Tune scheduler compares trials on every report, so a sweep asks for the validation loss in each
    # one: measured at eval steps (val_fresh) and carried forward in between (measured once at step 0).
    carry_val = config.get("report_val_loss_every_step", False)
    last_val = next((h["val_loss"] for h in reversed(history) if "val_loss" in h), None)
    val_seconds = 0.0  # validation time, reported with the next step (sweeps separate it from overhead)
    if carry_val and last_val is None:
        t_val = time.perf_counter()
        last_val = validation_loss(model, val_rows, pad_id, device)
        val_seconds = time.perf_counter() - t_val
    model.train()
    for step in range(start_step, tcfg.max_steps):
        if config.get("fail_at_step") == step and not resume:
            raise RuntimeError(f"injected failure at step {step}")
        t0 = time.perf_counter()
        idx = batch_indices(step, global_batch, len(rows), run.data.seed)
        mine = idx[ctx.rank :: ctx.world]
        loss_sum, tokens = 0.0, 0
        for micro in range(tcfg.grad_accum):
            chunk = [rows[i] for i in mine[micro * per_worker : (micro + 1) * per_worker]]
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss / tcfg.grad_accum
            loss.backward()
            loss_sum += loss.item()
            tokens += int(batch["attention_mask"].sum())
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        seconds = time.perf_counter() - t0
        metrics = {"step": done, "loss": loss_sum, "lr": optimizer.param_groups[0]["lr"],
                   "tokens_per_s": tokens * ctx.world / seconds, "step_seconds": seconds,
                   "step_started": time.time() - seconds}
        if fora.uses_stiefel:
            metrics["stiefel_lr"] = optimizer.param_groups[-1]["lr"]
            metrics["orthogonality_error"] = max_orthogonality_error(inner, fora.stiefel.factor)
        if done % tcfg.eval_every == 0 or done == tcfg.max_steps:
            t_val = time.perf_counter()
            metrics["val_loss"] = validation_loss(model, val_rows, pad_id, device)
            val_seconds += time.perf_counter() - t_val
        metrics["val_seconds"], val_seconds = val_seconds, 0.0
        log({k: v for k, v in metrics.items() if k not in ("step", "step_started")}, done)
        history.append(metrics)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.3f}")
        ckpt_dir = None
        if ctx.rank == 0 and (done % tcfg.checkpoint_every == 0 or done == tcfg.max_steps):
            ckpt_dir = tempfile.mkdtemp(prefix="fora-ckpt-")
            save_adapter(inner, Path(ckpt_dir) / ADAPTER_DIR, fora, layers=config["layers"])
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": done,
                        "history": history}, Path(ckpt_dir) / STATE_FILE)
            (Path(ckpt_dir) / "history.json").write_text(json.dumps(history))
        reported = dict(metrics)
        if carry_val:
            last_val = metrics.get("val_loss", last_val)
            reported.update(val_loss=last_val, val_fresh="val_loss" in metrics, max_steps=tcfg.max_steps)
        ctx.report(reported, ckpt_dir)
        if ckpt_dir:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    if bar is not None:
        bar.close()


def run_training(run: RunConfig, data_dir: str | Path, layers: list[int], out_dir: str | Path,
                 mlflow_run_id: str | None = None, progress: bool = False,
                 fail_at_step: int | None = None) -> dict:
    """Driver: fit the per-worker loop with Ray Train (or in-process when ``train.use_ray`` is off) and copy
    the final adapter to ``out_dir/adapter``. Returns {"adapter_dir", "metrics" (the last step's), "seconds" (wall), "steps_run" (this call),
    "first_step_s" (stage start -> first step start: Ray start-up, worker group, model load),
    "loop_seconds" (the steps themselves)}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = Path(run.checkpoint_dir) if not run.checkpoint_dir.startswith("s3://") else None
    loop_config = {"run": run.to_dict(), "data_dir": str(Path(data_dir).resolve()), "layers": list(layers),
                   "use_ray": run.train.use_ray, "tracking_uri": run.tracking_uri,
                   "mlflow_run_id": mlflow_run_id, "progress": progress, "fail_at_step": fail_at_step}
    t0, started = time.perf_counter(), time.time()
    if not run.train.use_ray:
        assert storage is not None, "in-process training needs a local checkpoint_dir"
        storage.mkdir(parents=True, exist_ok=True)
        loop_config["storage"] = str(storage)
        train_loop_per_worker(loop_config)
        final = _LocalContext(storage).latest_checkpoint()
    else:
        final = _fit_with_ray(run, loop_config)
    seconds = time.perf_counter() - t0
    if final is None:
        raise RuntimeError("training finished without a checkpoint")
    adapter = out / ADAPTER_DIR
    if adapter.exists():
        shutil.rmtree(adapter)
    shutil.copytree(Path(final) / ADAPTER_DIR, adapter)
    history = json.loads((Path(final) / "history.json").read_text())
    (out / "history.json").write_text(json.dumps(history))
    if history:
        plot_history(history, out / "loss_curve.png", f"{run.fora.method}: {run.name}")
    fresh = [h for h in history if h.get("step_started", 0) >= started]
    return {"adapter_dir": str(adapter), "metrics": history[-1] if history else {}, "seconds": seconds,
            "steps_run": len(fresh),
            "first_step_s": min(h["step_started"] for h in fresh) - started if fresh else None,
            "loop_seconds": sum(h["step_seconds"] for h in fresh)}


def ray_dashboard() -> bool:
    """Start Ray's dashboard with a local Ray (FORA_RAY_DASHBOARD=0: not). It brings the State API that Ray
    Train's placement-group cleaner polls (without it that actor logs warnings); on 2 CPUs it did not
    change training throughput measurably (bench_ray_overhead.py: 0.82 vs 0.79 of no-Ray tokens/s)."""
    return os.environ.get("FORA_RAY_DASHBOARD", "1") == "1"


def _fit_with_ray(run: RunConfig, loop_config: dict) -> str | None:
    import ray  # [ray]
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig  # [ray]
    from ray.train import RunConfig as RayRunConfig  # [ray]
    from ray.train.torch import TorchConfig, TorchTrainer  # [ray]

    if not ray.is_initialized():
        ray.init(log_to_driver=True, configure_logging=False, include_dashboard=ray_dashboard())
    tcfg = run.train
    backend = tcfg.backend if tcfg.backend != "auto" else ("nccl" if tcfg.use_gpu else "gloo")
    storage = run.checkpoint_dir if run.checkpoint_dir.startswith("s3://") else str(Path(run.checkpoint_dir).resolve())
    run_dir = None if storage.startswith("s3://") else str(Path(storage) / run.name)
    loop_config = {**loop_config, "ray_run_dir": run_dir}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=tcfg.num_workers, use_gpu=tcfg.use_gpu,
                                     resources_per_worker={"CPU": tcfg.cpus_per_worker}),
        torch_config=TorchConfig(backend=backend),
        run_config=RayRunConfig(name=run.name, storage_path=storage,
                                failure_config=FailureConfig(max_failures=tcfg.max_failures),
                                checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()  # [ray]
    if result.checkpoint is None:  # nothing left to train: the run had already finished
        return latest_local_checkpoint(run_dir) if run_dir else None
    return result.checkpoint.to_directory(tempfile.mkdtemp(prefix="fora-final-"))


def plot_history(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training loss per step and validation loss where measured, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="train loss", lw=1)
    val = [h for h in history if "val_loss" in h]
    if val:
        ax.plot([h["step"] for h in val], [h["val_loss"] for h in val], "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (response tokens)")
    ax.set_title(title or "FoRA training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
