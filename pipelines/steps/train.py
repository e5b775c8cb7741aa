"""Step 3, train: FoRA at the selected layers, as a Ray Train ``TorchTrainer`` job (or in-process).

``train_loop_per_worker(config)`` is the per-worker function (Ray-specific lines marked ``# [ray]``). It is
used unchanged by the train step and by a Ray Tune sweep (a driver per trial builds a TorchTrainer around
it). Data order is a function of the step alone (a seeded permutation per epoch), so a run resumed from a
checkpoint at step s continues with exactly the batches it would have seen: no step lost or repeated.

Checkpoints (every ``train.checkpoint_every`` steps and at the end) hold the PEFT adapter, the optimizer
and scheduler states (tensors only, loaded with ``weights_only=True``), the step and the run's fingerprint.
They go to the run's own namespace under ``train.checkpoint_dir`` (a folder or an s3:// URI, through Ray's
storage; see ``pipelines/runtime/checkpoints.py``). A worker failure restarts from the latest one
(``FailureConfig``); re-running the same run (same config, data and layers) resumes from it too; any other
run starts fresh.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fora_core import (
    ForaConfig,
    apply_fora,
    create_fora_optimizer,
    max_orthogonality_error,
    restore_training_state,
    save_adapter,
)
from fora_core.memory import enable_activation_checkpointing

from ..config.run_config import RunConfig
from ..data.jsonl import read_jsonl
from ..runtime import checkpoints, interruption, rng_state, storage
from ..runtime.models import model_source
from ..runtime.ray_runtime import check_placement, init_ray
from . import divergence
from .calibrate import mean_response_loss
from .train_batches import batch_indices, make_batch, real_tokens, target_tokens, training_rows, worker_share
from .train_contexts import LocalContext, RayContext, TuneContext, metric_logger
from .train_outputs import ADAPTER_DIR, write_outputs

logger = logging.getLogger("fora")

STATE_FILE = "trainer_state.pt"


def lr_lambda(warmup: int, total: int):
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def load_trainer_state(resume: str | Path, expected_fingerprint: str | None) -> dict | None:
    """The optimizer/scheduler state of a checkpoint, or None when it belongs to another run.

    Loaded with ``weights_only=True``: a checkpoint comes from shared storage, and a pickle there would run
    whatever code whoever can write the bucket put in it."""
    meta_file = Path(resume) / checkpoints.META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if expected_fingerprint and meta.get("fingerprint") != expected_fingerprint:
        logger.warning("checkpoint %s belongs to another run (fingerprint %s, this run %s): starting fresh",
                       resume, meta.get("fingerprint"), expected_fingerprint)
        return None
    try:
        return torch.load(Path(resume) / STATE_FILE, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise RuntimeError(f"refusing to load {Path(resume) / STATE_FILE}: it is not a plain tensor checkpoint "
                           f"({str(err).splitlines()[0][:160]})") from None


def validation_loss(model, rows: list[dict], pad_id: int, device=None, batch_size: int = 8) -> float:
    model.eval()
    loss = mean_response_loss(model, rows, pad_id, batch_size)
    model.train()
    return loss


def train_loop_per_worker(config: dict[str, Any]) -> dict | None:
    """Per-worker FoRA training; returns the last report when training stopped on divergence (``divergence.py``). ``config``: run (RunConfig dict), data_dir (folder or s3:// URI: a worker on
    another machine reads the data from storage, never from the submitting process's disk), layers, use_ray,
    storage (in-process), resume_from, fingerprint, run_key, tracking_uri, mlflow_run_id, progress,
    fail_at_step and nan_at_step (tests)."""
    scratch = Path(tempfile.mkdtemp(prefix="fora-worker-"))
    try:
        return _train(config, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train(config: dict[str, Any], scratch: Path) -> dict | None:

    run = RunConfig.from_dict(config["run"])
    tcfg = run.train
    if config.get("in_tune"):
        ctx: LocalContext | RayContext | TuneContext = TuneContext()
    elif config.get("use_ray"):
        ctx = RayContext(config.get("resume_from"))
    else:
        ctx = LocalContext(config["storage"], config.get("resume_from"))
    torch.manual_seed(run.seed)
    torch.set_num_threads(tcfg.threads_per_worker or max(1, (os.cpu_count() or 1) // ctx.local_world))
    use_gpu = tcfg.use_gpu and torch.cuda.is_available()
    if use_gpu and config.get("use_ray") and not config.get("in_tune"):
        import ray.train.torch  # [ray]

        device = ray.train.torch.get_device()  # [ray]
    else:
        device = torch.device("cuda" if use_gpu else "cpu")
    bf16 = tcfg.bf16 == "on" or (tcfg.bf16 == "auto" and use_gpu)

    model, tokenizer = model_source(run).load(device, quantization=run.quantization)
    if tcfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    fora: ForaConfig = run.fora
    energies = None
    if fora.spec.init == "filet":  # FILet's per-module energies, from the same calibration pass
        from .calibrate import load_filet_energies

        if not config.get("calib_dir"):
            raise RuntimeError(f"method '{fora.method}' needs the calibration folder (its FILet energies)")
        energies = load_filet_energies(config["calib_dir"])
    model = apply_fora(model, config["layers"], fora, filet_energies=energies)
    inner = model
    if isinstance(ctx, RayContext) and ctx.world > 1:
        import ray.train.torch  # [ray]

        model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": False})  # [ray]
    optimizer = create_fora_optimizer(inner, fora, lr=tcfg.lr, stiefel_lr=tcfg.stiefel_lr,
                                      weight_decay=tcfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tcfg.warmup_steps, tcfg.max_steps))

    start_step = 0
    history: list[dict] = []
    resume = ctx.latest_checkpoint(scratch)
    state = load_trainer_state(resume, config.get("fingerprint")) if resume else None
    if state is not None:
        restore_training_state(inner, Path(resume) / ADAPTER_DIR, fora)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step = state["step"]
        history = state.get("history", [])
        saved_rng = state.get("rng") or []  # checkpoints before 2026-12 carry none
        if len(saved_rng) == ctx.world:
            rng_state.restore(saved_rng[ctx.rank])
        elif saved_rng and ctx.rank == 0:
            logger.warning("checkpoint of %d workers resumed on %d: the data order is the same, the dropout masks "
                           "are drawn afresh", len(saved_rng), ctx.world)
    else:
        resume = None

    data_dir = storage.localize(config["data_dir"], scratch / "data")
    rows = training_rows(read_jsonl(data_dir / "train.jsonl"), run.data.packing, run.data.max_length)
    targets = [target_tokens(r) for r in rows]  # per row, once: every step sums them over its global batch
    val_rows = read_jsonl(data_dir / "validation.jsonl")
    pad_id = tokenizer.pad_token_id
    per_worker = tcfg.batch_size
    global_batch = per_worker * tcfg.grad_accum * ctx.world
    metrics_log = metric_logger(config, ctx.rank)
    bar = None
    if config.get("progress") and ctx.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=tcfg.max_steps, initial=start_step, desc=f"training ({fora.method})", unit="step")
    say = _say if ctx.rank == 0 and bar is None else (lambda text: None)
    if config.get("use_ray"):
        import ray  # [ray]

        # every worker says where it runs (the data-parallel layout, in the job's log)
        _say(f"training worker {ctx.rank}/{ctx.world} on Ray node {ray.get_runtime_context().get_node_id()}")
    if start_step:
        say(f"resumed at step {start_step} of {tcfg.max_steps} from {resume}")
    every = max(1, tcfg.max_steps // 10)

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
    trainable = [p for p in inner.parameters() if p.requires_grad]
    last_saved = start_step or None
    try:
        for step in range(start_step, tcfg.max_steps):
            if config.get("fail_at_step") == step and not resume:
                raise RuntimeError(f"injected failure at step {step}")
            t0 = time.perf_counter()
            idx = batch_indices(step, global_batch, len(rows), run.data.seed)
            mine = worker_share(idx, ctx.rank, ctx.world)
            # sum of token losses / the global batch's target tokens, x W for DDP's mean (train_batches.py)
            n_targets = torch.tensor(max(1, sum(targets[i] for i in idx)), device=device)
            loss_sum, tokens = 0.0, 0
            for micro in range(tcfg.grad_accum):
                chunk = [rows[i] for i in mine[micro * per_worker : (micro + 1) * per_worker]]
                batch = {k: v.to(device) for k, v in make_batch(chunk, pad_id).items()}
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                    # use_cache=False: no KV cache in training (and with one, transformers ignores packing)
                    loss = model(**batch, num_items_in_batch=n_targets, use_cache=False).loss
                if config.get("nan_at_step") == step:  # tests: a non-finite loss at this step
                    loss = loss * float("nan")
                (loss * ctx.world).backward()
                loss_sum += loss.item()
                tokens += real_tokens(chunk)
            loss_sum = ctx.sum_over_workers(loss_sum)
            problem = divergence.gradient_problem(loss_sum, trainable)
            if problem is None:
                optimizer.step()
                problem = divergence.parameter_problem(trainable)
            if problem is not None:  # nothing of this step is kept: report it and stop (no checkpoint)
                stopped = {"step": step + 1, "loss": loss_sum, "diverged": 1, "problem": problem,
                           "last_checkpoint": last_saved, "val_loss": last_val if carry_val else None}
                ctx.report({k: v for k, v in stopped.items() if v is not None}, None)
                if isinstance(ctx, RayContext) and ctx.rank == 0 and config.get("namespace"):
                    divergence.write_marker(config["namespace"], stopped)
                say(divergence.explain(config["run"], step + 1, problem, last_saved))
                return stopped
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
                if ctx.world > 1:  # DDP keeps replicas equal; a spread means a broken collective or kernel
                    metrics["replica_spread"] = ctx.replica_spread(trainable)
                    problem = divergence.replica_problem(metrics["replica_spread"])
                    if problem is not None:
                        raise RuntimeError(f"step {done}: {problem}")
                t_val = time.perf_counter()
                metrics["val_loss"] = validation_loss(model, val_rows, pad_id, device)
                val_seconds += time.perf_counter() - t_val
            metrics["val_seconds"], val_seconds = val_seconds, 0.0
            if metrics_log is not None:
                metrics_log.log({k: v for k, v in metrics.items() if k not in ("step", "step_started")}, done,
                                prefix="train/")
            history.append(metrics)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum:.3f}")
            elif done % every == 0 or done == tcfg.max_steps:
                say(f"step {done}/{tcfg.max_steps} loss {loss_sum:.4f}"
                    + (f" val_loss {metrics['val_loss']:.4f}" if "val_loss" in metrics else "")
                    + f" {metrics['tokens_per_s']:.0f} tokens/s")
            ckpt_dir = None
            if done % tcfg.checkpoint_every == 0 or done == tcfg.max_steps:
                rng = rng_state.gather(ctx.world)  # every worker's generators (a collective)
                if ctx.rank == 0:
                    ckpt_dir = tempfile.mkdtemp(prefix="ckpt-", dir=scratch)
                    save_checkpoint(Path(ckpt_dir), inner, fora, config, optimizer, scheduler, done, history, rng)
                last_saved = done
            interruption.progress(step=done)
            reported = dict(metrics)
            if carry_val:
                last_val = metrics.get("val_loss", last_val)
                reported.update(val_loss=last_val, val_fresh="val_loss" in metrics, max_steps=tcfg.max_steps)
            ctx.report(reported, ckpt_dir)
            if ckpt_dir:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
    finally:
        if bar is not None:
            bar.close()
        if metrics_log is not None:
            metrics_log.close()
    return None


def _say(text: str) -> None:
    """A progress line on stdout (a Ray worker's stdout reaches the driver's log and the Ray job's log)."""
    print(f"[fora] {text}", flush=True)


def save_checkpoint(path: Path, model, fora: ForaConfig, config: dict, optimizer, scheduler, step: int,
                    history: list[dict], rng: list[dict] | None = None) -> None:
    """Adapter (safetensors), optimizer + scheduler state and every worker's random-number state (tensors,
    numbers and tuples only), history and the run's fingerprint."""
    save_adapter(model, path / ADAPTER_DIR, fora, layers=config["layers"])
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                "history": history, "rng": rng or []}, path / STATE_FILE)
    (path / "history.json").write_text(json.dumps(history))
    run = config["run"]
    (path / checkpoints.META_FILE).write_text(json.dumps(checkpoints.meta(
        config.get("fingerprint") or "", step, run["train"]["max_steps"], config.get("run_key") or "")))


def run_training(run: RunConfig, data_dir: str | Path, layers: list[int], out_dir: str | Path,
                 mlflow_run_id: str | None = None, progress: bool = False,
                 fail_at_step: int | None = None, run_key: str | None = None, nan_at_step: int | None = None,
                 calib_dir: str | Path | None = None) -> dict:
    """Driver: pick the run's checkpoint namespace (``runtime/checkpoints.py``), fit the per-worker loop with Ray
    Train (or in-process when ``train.use_ray`` is off), and write the final adapter, history and loss curve
    to ``out_dir`` (a folder or an s3:// URI). ``data_dir`` may be an s3:// URI too.

    Returns {"adapter_dir", "metrics" (the last step's), "seconds" (wall), "steps_run" (this call),
    "first_step_s" (stage start -> first step start: Ray start-up, worker group, model load),
    "loop_seconds" (the steps themselves), "checkpoints" (the namespace), "resumed_from_step"}."""
    t0, started = time.perf_counter(), time.time()
    data = storage.absolute(data_dir)
    data_hash = storage.read_json(storage.join(data, "data_card.json"))["content_hash"]
    ns = checkpoints.choose_namespace(run, run_key, data_hash, list(layers))
    found = ns.latest
    interruption.progress(checkpoints=ns.path, max_steps=run.train.max_steps,
                          step=(int(found["step"]) if found else 0) if not run.train.use_ray else None)
    loop_config = {"run": run.to_dict(), "data_dir": data, "layers": list(layers), "use_ray": run.train.use_ray,
                   "calib_dir": storage.absolute(calib_dir) if calib_dir is not None else None,
                   "tracking_uri": run.tracking_uri, "mlflow_run_id": mlflow_run_id, "progress": progress,
                   "fail_at_step": fail_at_step, "nan_at_step": nan_at_step, "namespace": ns.path, "fingerprint": ns.fingerprint, "run_key": ns.run_key,
                   "resume_from": found["checkpoint"] if found else None}
    scratch = Path(tempfile.mkdtemp(prefix="fora-train-"))
    try:
        if ns.state == "finished":
            final = storage.localize(found["checkpoint"], scratch / "final")
        elif not run.train.use_ray:
            loop_config["storage"] = ns.path
            divergence.raise_if_diverged(train_loop_per_worker(loop_config), loop_config["run"], ns.path)
            last = checkpoints.latest(ns.path)
            final = storage.localize(last["checkpoint"], scratch / "final") if last else None
        else:
            final = _fit_with_ray(run, loop_config, ns, scratch)
        seconds = time.perf_counter() - t0
        if final is None:
            raise RuntimeError("training finished without a checkpoint")
        summary = write_outputs(run, Path(final), out_dir, scratch, ns, found)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    history = summary.pop("history")
    fresh = [h for h in history if h.get("step_started", 0) >= started]
    return {**summary, "metrics": history[-1] if history else {}, "seconds": seconds, "steps_run": len(fresh),
            "first_step_s": min(h["step_started"] for h in fresh) - started if fresh else None,
            "loop_seconds": sum(h["step_seconds"] for h in fresh)}


def _fit_with_ray(run: RunConfig, loop_config: dict, ns, scratch: Path) -> Path | None:
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig  # [ray]
    from ray.train import RunConfig as RayRunConfig  # [ray]
    from ray.train.torch import TorchConfig, TorchTrainer  # [ray]

    where = init_ray(run)
    check_placement(run, where)
    tcfg = run.train
    backend = tcfg.backend if tcfg.backend != "auto" else ("nccl" if tcfg.use_gpu else "gloo")
    storage_path, filesystem = storage.ray_storage(ns.root)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=tcfg.num_workers, use_gpu=tcfg.use_gpu,
                                     resources_per_worker={"CPU": tcfg.cpus_per_worker},
                                     placement_strategy=tcfg.placement_strategy),
        torch_config=TorchConfig(backend=backend),
        run_config=RayRunConfig(name=ns.name, storage_path=storage_path, storage_filesystem=filesystem,
                                failure_config=FailureConfig(max_failures=tcfg.max_failures),
                                checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    divergence.take_marker(ns.path)  # a stale one from an earlier attempt
    result = trainer.fit()  # [ray]
    divergence.raise_if_diverged(divergence.take_marker(ns.path), loop_config["run"], ns.path)
    if result.checkpoint is None:
        return None
    return Path(result.checkpoint.to_directory(str(scratch / "final")))
