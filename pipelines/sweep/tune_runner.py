"""``fora sweep CONFIG``: a Ray Tune sweep over the layer budget K, the learning rates and the method.

Data prep and the Fisher pass run **once** (and are reused when an interrupted sweep restarts); every
trial selects its top-K layers from that one report. Each trial is a Ray Train run of the same
``train_loop_per_worker`` as the train step, built by a small driver function per trial (the pattern
that works in Ray 2.60: ``Tuner(TorchTrainer)`` does not), reporting to Tune through
``TuneReportCallback``. ASHA (or median stopping, or FIFO) stops weak trials early. MLflow gets one
parent run for the sweep and a nested child run per trial; the best trial flows into evaluation and
registration like the train step's adapter.

Outputs under ``<output_dir>/sweep/``: data/, calibration/, tune/ (Tune's experiment, restorable),
results.csv + results.md, k_sensitivity.png (metric vs K per method: the FoRA paper's Figure 2 for your
model), learning_curves.png, best/ (adapter, eval/, merged/), sweep_summary.json.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..config.run_config import RunConfig
from ..runtime import atomic, checkpoints, storage
from ..runtime.ray_runtime import check_placement, init_ray
from ..steps import stages
from .trials import (
    TRIAL_DRIVER_CPU,
    in_process_trials,
    num_decoder_layers,
    plan,
    trial_driver,
    trial_resources,
)

log = logging.getLogger("fora")


def _tune_space(space: dict[str, list]):
    from ray import tune

    kind, values = next(iter(space.items()))
    return {"grid": tune.grid_search, "choice": tune.choice}[kind](values) if kind in ("grid", "choice") \
        else {"loguniform": tune.loguniform, "uniform": tune.uniform}[kind](*values)


def _scheduler(run: RunConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    s = run.sweep
    grace = s.grace_period or run.train.eval_every
    if s.scheduler == "asha":
        return ASHAScheduler(time_attr="step", metric=s.metric, mode=s.mode, max_t=run.train.max_steps,
                             grace_period=grace, reduction_factor=s.reduction_factor)
    if s.scheduler == "median":
        return MedianStoppingRule(time_attr="step", metric=s.metric, mode=s.mode, grace_period=grace)
    return FIFOScheduler()


def _trial_callback(tracking_uri: str, experiment_id: str, max_steps: int):
    """Closes each trial's MLflow child run with its final metrics and how it ended."""
    import mlflow
    from ray.tune import Callback  # [ray]

    class MlflowTrialCloser(Callback):
        def _close(self, trial, status: str) -> None:
            client = mlflow.MlflowClient(tracking_uri)
            found = client.search_runs([experiment_id], f"tags.`fora.trial_id` = '{trial.trial_id}'")
            if not found:
                return
            run_id = found[0].info.run_id
            last = trial.last_result or {}
            steps = int(last.get("step", 0))
            ended = "failed" if status == "FAILED" else "diverged" if last.get("diverged") else (
                "completed" if steps >= max_steps else "stopped_early")
            status = "FAILED" if ended == "diverged" else status
            client.set_tag(run_id, "fora.trial_status", ended)
            where = last.get("checkpoint_path") or (trial.checkpoint.path if trial.checkpoint else None)
            if where:
                client.set_tag(run_id, "fora.checkpoint", str(where))
            client.set_terminated(run_id, status)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._close(trial, "FINISHED")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._close(trial, "FAILED")

    return MlflowTrialCloser()


def _max_concurrent(run: RunConfig, total_cpus: float) -> int:
    if run.sweep.max_concurrent:
        return run.sweep.max_concurrent
    per_trial = TRIAL_DRIVER_CPU + run.train.num_workers * run.train.cpus_per_worker
    return max(1, int(total_cpus // per_trial))


def tune_trials_to(run: RunConfig, data_dir: str | Path, calib_dir: str | Path, out: str | Path,
                   parent_run_id: str, run_key: str | None = None) -> dict:
    """The trials, the best trial's adapter (``best/adapter``), the tables and plots and
    ``sweep_summary.json``, written to ``out`` (a folder, or an s3:// URI when this runs as a Ray job)."""
    import tempfile

    remote = storage.is_uri(str(out))
    local = Path(tempfile.mkdtemp(prefix="fora-sweep-")) if remote else Path(out)
    try:
        summary = tune_trials(run, data_dir, calib_dir, local, parent_run_id, run_key)
        if summary["finished"]:
            best_trial(run, summary, local / "best")
        atomic.write_text(local / "sweep_summary.json", json.dumps(summary, indent=2, default=str))
        if remote:
            storage.upload_dir(local, str(out))
    finally:
        if remote:
            shutil.rmtree(local, ignore_errors=True)
    return summary


def state_root(run: RunConfig, sweep_dir: str | Path, run_key: str | None) -> str:
    """Where Tune's experiment and the trials' checkpoints live: <storage.uri>/<name>/<run>/sweep when
    storage is configured (a retried pod, or a Ray job on another machine, finds them there), else the
    local sweep folder."""
    if run.storage.uri:
        return storage.join(run.storage.uri, run.name, checkpoints.safe_key(run_key), "sweep")
    return str(Path(sweep_dir).resolve())


def _tuner(run: RunConfig, trainable, space: dict, root: str, experiment_id: str, concurrent: int):
    """A new ``Tuner`` under ``root/tune/experiment``, or the one there restored (finished trials kept, errored
    ones resumed); returns (tuner, resumed)."""
    from ray import tune  # [ray]

    tune_storage, filesystem = storage.ray_storage(storage.join(root, "tune"))
    exp_path = f"{tune_storage}/experiment"
    if tune.Tuner.can_restore(exp_path, storage_filesystem=filesystem):
        log.info("resuming the sweep in %s (finished trials are kept)", storage.join(root, "tune", "experiment"))
        return tune.Tuner.restore(exp_path, trainable=trainable, resume_errored=True, param_space=space,
                                  storage_filesystem=filesystem), True
    return tune.Tuner(
        trainable, param_space=space,
        run_config=tune.RunConfig(name="experiment", storage_path=tune_storage, storage_filesystem=filesystem,
                                  callbacks=[_trial_callback(run.tracking_uri, experiment_id, run.train.max_steps)],
                                  # an in-process trial is retried by Tune (from its last checkpoint)
                                  failure_config=tune.FailureConfig(max_failures=run.train.max_failures
                                                                    if in_process_trials(run) else 0)),
        tune_config=tune.TuneConfig(scheduler=_scheduler(run), num_samples=run.sweep.num_samples,
                                    max_concurrent_trials=concurrent)), False


def _summary(run: RunConfig, results: list[dict], parent_run_id: str, n_trials: int, resumed: bool,
             concurrent: int, threads: int, tune_seconds: float) -> dict[str, Any]:
    """How each trial ended, the seconds (training, validation, wall, the share outside them) and the best."""
    finished = [r for r in results if r["status"] in ("completed", "stopped_early", "diverged")]  # ended
    summary: dict[str, Any] = {
        "parent_run_id": parent_run_id, "planned_trials": n_trials, "finished_trials": len(finished),
        "finished": len(finished) == n_trials, "resumed": resumed, "concurrent": concurrent,
        "threads_per_trial": threads, "failed_trials": sum(r["status"] == "failed" for r in results),
        "stopped_early": sum(r["status"] == "stopped_early" for r in results),
        "diverged_trials": sum(r["status"] == "diverged" for r in results),
        "seconds": {"tune": tune_seconds, "trials_training": sum(r.get("train_seconds", 0.0) for r in results),
                    "trials_validation": sum(r.get("val_seconds", 0.0) for r in results),
                    "trials_wall": sum(r.get("wall_seconds") or 0.0 for r in results)},
        "results": results,
    }
    sec = summary["seconds"]
    # outside training: Ray start-up, worker groups, model loads, checkpoint I/O, Tune's own scheduling
    busy = sec["trials_training"] + sec["trials_validation"]
    sec["overhead_share"] = 1 - busy / (tune_seconds * concurrent) if tune_seconds else 0.0
    if finished:
        summary["best"] = _best(results, run.sweep.metric, run.sweep.mode)
    return summary


def tune_trials(run: RunConfig, data_dir: str | Path, calib_dir: str | Path, sweep_dir: str | Path,
                parent_run_id: str, run_key: str | None = None, arms: list[dict] | None = None) -> dict:
    """Ray Tune over the trials on prepared data and a Fisher report; tables, plots and MLflow children.
    ``data_dir`` and ``calib_dir`` may be s3:// URIs (trials on other machines read them from there).
    ``arms``: explicit trials, each with its own method, K, lr, stiefel_lr (and seed), instead of the
    ``sweep`` section's grid.

    Returns the summary: trials, how each ended, seconds, and ``best`` (the best trial's row)."""
    import mlflow
    import ray
    from ray import tune  # [ray]

    from .report import collect_results, plot_k_sensitivity, plot_learning_curves, write_tables

    if arms is None:
        num_layers, arms, n_trials = plan(run)
        space = {"arm": tune.grid_search(arms), "lr": _tune_space(run.sweep.lr),
                 "stiefel_lr": _tune_space(run.sweep.stiefel_lr)}
    else:
        num_layers, n_trials = num_decoder_layers(run), len(arms)
        space = {"arm": tune.grid_search(arms)}
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(run.tracking_uri)
    experiment_id = mlflow.MlflowClient(run.tracking_uri).get_run(parent_run_id).info.experiment_id
    where = init_ray(run)
    check_placement(run, where)  # at least one trial's workers must fit
    concurrent = _max_concurrent(run, ray.cluster_resources().get("CPU", 1))
    threads = run.train.threads_per_worker or max(1, int((os.cpu_count() or 1) // (concurrent * run.train.num_workers)))
    base = run.to_dict()
    base["train"]["threads_per_worker"] = threads
    root = state_root(run, sweep_dir, run_key)
    if storage.is_uri(root):
        storage.ensure_bucket(root, create=run.storage.create_bucket)
    elif run_key and run_key != checkpoints.LOCAL_RUN_KEY:
        log.warning("Tune's state is on this pod's disk (%s): set storage.uri so that a retried pod resumes the "
                    "sweep instead of starting it again", root)
    data_hash = storage.read_json(storage.join(str(data_dir), "data_card.json"))["content_hash"]
    ctx = {"run": base, "calibration": storage.absolute(calib_dir), "data_dir": storage.absolute(data_dir),
           "data_hash": data_hash, "tracking_uri": run.tracking_uri,
           "experiment_id": experiment_id, "parent_run_id": parent_run_id, "storage": storage.join(root, "train")}
    trainable = tune.with_resources(tune.with_parameters(trial_driver, ctx=ctx), trial_resources(run))
    t = time.perf_counter()
    tuner, resumed = _tuner(run, trainable, space, root, experiment_id, concurrent)
    log.info("sweep: %d trials (%s%s), %d at a time, %d torch threads each", n_trials,
             ", ".join(sorted({f"{a['method']} K={a['K']}" for a in arms})),
             "" if "lr" in space else " x lr x stiefel_lr", concurrent, threads)
    grid = tuner.fit()  # [ray]
    tune_seconds = time.perf_counter() - t

    results = collect_results(grid, run.train.max_steps)
    for r in results:  # Ray reports paths on its filesystem: bucket/key for S3
        if storage.is_uri(root) and r.get("checkpoint_path") and not storage.is_uri(r["checkpoint_path"]):
            r["checkpoint_path"] = "s3://" + r["checkpoint_path"].lstrip("/")
    outputs = write_tables(results, sweep_dir)
    outputs += [plot_k_sensitivity(results, sweep_dir / "k_sensitivity.png", run.sweep.metric, num_layers),
                plot_learning_curves(results, sweep_dir / "learning_curves.png")]
    summary = _summary(run, results, parent_run_id, n_trials, resumed, concurrent, threads, tune_seconds)
    finished = summary["finished_trials"]
    with stages.tracked(run, parent_run_id):
        for path in outputs:
            mlflow.log_artifact(str(path), "sweep")
        mlflow.log_metrics({"sweep/trials_finished": finished, "sweep/stopped_early": summary["stopped_early"],
                            "sweep/seconds_tune": tune_seconds})
        if "best" in summary:
            mlflow.set_tag("sweep.best_trial", summary["best"]["trial_id"])
    return summary


def sweep_tags(summary: dict) -> dict[str, str]:
    """Registry tags saying a version came from a sweep, and which trial."""
    best = summary["best"]
    return {"source": "sweep", "sweep_trial": best["trial_id"], "sweep_parent_run": summary["parent_run_id"],
            "sweep_lr": str(best["lr"]), "sweep_stiefel_lr": str(best["stiefel_lr"])}


def copy_trial_adapter(row: dict, dest: Path) -> Path:
    """A trial's final adapter (its last checkpoint's, local or s3://) copied to ``dest``, replacing it."""
    if dest.exists():
        shutil.rmtree(dest)
    source = storage.join(str(row["checkpoint_path"]), "adapter")
    if storage.is_uri(source):
        storage.download_dir(source, dest)
    else:
        shutil.copytree(source, dest)
    return dest


def best_trial(run: RunConfig, summary: dict, out_dir: str | Path) -> tuple[RunConfig, Path]:
    """The run config with the best trial's method, K and learning rates, and its adapter copied to
    ``out_dir/adapter`` (from the trial's last checkpoint)."""
    best = summary["best"]
    out = Path(out_dir)
    adapter = copy_trial_adapter(best, out / "adapter")
    log.info("best trial %s: %s K=%d lr=%.2g stiefel_lr=%.2g (%s %.4f)", best["trial_id"], best["method"],
             best["K"], best["lr"], best["stiefel_lr"], run.sweep.metric, best[run.sweep.metric])
    return best_run_config(run, summary), adapter


def best_run_config(run: RunConfig, summary: dict) -> RunConfig:
    """The run config with the best trial's method, K and learning rates."""
    best = summary["best"]
    run_dict = run.to_dict()
    run_dict["fora"].update(method=best["method"], layer_budget=best["K"])
    run_dict["train"].update(lr=best["lr"], stiefel_lr=best["stiefel_lr"])
    return RunConfig.from_dict(run_dict)


def _best(results: list[dict], metric: str, mode: str) -> dict:
    """The best trial by its last reported metric; trials that ran to the end are preferred."""
    pool = [r for r in results if r["status"] == "completed" and r.get(metric) is not None] or \
           [r for r in results if r.get(metric) is not None and r["status"] != "diverged"]
    if not pool:
        raise RuntimeError("no trial reported the sweep metric")
    return (min if mode == "min" else max)(pool, key=lambda r: r[metric])
