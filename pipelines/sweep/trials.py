"""One sweep trial: the (method, K) arms of the grid, a trial's run config, and the trial driver that Tune
runs (the train step's loop in the trial's own process, or a Ray Train run for several workers).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

from fora_core import FISHER_METHODS, select_layers  # FISHER_METHODS: K applies; the others adapt every layer
from fora_core.config import resolve_layer_budget

from ..config.errors import RunConfigError
from ..config.run_config import RunConfig
from ..runtime import checkpoints
from ..training.calibration_artifacts import load_selection
from ..training.loop import train_loop_per_worker
from ..training.loop_config import LoopConfig
from ..training.trainer import build_torch_trainer

TRIAL_DRIVER_CPU = 0.1


def num_decoder_layers(run: RunConfig) -> int:
    """L from the model's config alone (no weights loaded), after the model checks of ``preflight.py``
    (targets, K values, rank, max_length). Not the data source: trials on a cluster read prepared data
    from storage, and the source may be a file only the submitting pod has."""
    from ..preflight.checks import check_model

    return check_model(run)["layers"]


def build_arms(run: RunConfig, num_layers: int) -> list[dict[str, Any]]:
    """The (method, K) grid: each K resolved to a layer count (an error names K outside 1..L); all-layer
    methods get K = L once; duplicates (two fractions rounding to the same K) are dropped."""
    arms: list[dict[str, Any]] = []
    for method in run.sweep.methods:
        budgets = run.sweep.layer_budgets if method in FISHER_METHODS else [num_layers]
        for budget in budgets:
            try:
                k = resolve_layer_budget(budget, num_layers)
            except Exception:
                raise RunConfigError(f"invalid value for 'sweep.layer_budgets': {budget!r} (allowed: 1..{num_layers} "
                                     f"layers, this model has {num_layers}, or a fraction in (0, 1])") from None
            arm = {"method": method, "K": k}
            if arm not in arms:
                arms.append(arm)
    return arms


def count_trials(run: RunConfig, arms: list[dict]) -> int:
    """Trials Tune will run: the grid (arms x grid lr values) times num_samples."""
    grid = len(arms)
    for space in (run.sweep.lr, run.sweep.stiefel_lr):
        kind, values = next(iter(space.items()))
        if kind == "grid":
            grid *= len(values)
    return grid * run.sweep.num_samples


def trial_settings(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's method, K, lr, stiefel_lr (and seed): the searched values, overridden by what its arm
    fixes (an ablation's arms carry their own learning rates and seed)."""
    return {**{k: params[k] for k in ("lr", "stiefel_lr") if k in params}, **params["arm"]}


def arm_run_dict(base: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The run config (as a dict) of one trial: ``base`` with the trial's method, K, lrs and seed. A seed
    sets the run's seed (dropout), the adapters' init and the data order; the prepared data stay the same."""
    out = {**base, "fora": {**base["fora"], "method": settings["method"], "layer_budget": settings["K"]},
           "train": {**base["train"], "lr": settings["lr"], "stiefel_lr": settings["stiefel_lr"]}}
    if settings.get("seed") is not None:
        seed = settings["seed"]
        out.update(seed=seed, data={**base["data"], "seed": seed})
        out["fora"]["seed"] = seed
    return out


def in_process_trials(run: RunConfig) -> bool:
    """Single-worker trials run the training loop inside the Tune trial's process. A Ray Train worker group
    per trial (a controller and a worker: two more processes that import torch, transformers and peft, and
    a placement group) buys nothing for one worker; it cost about 20 s per trial here, more than a tiny
    trial's training. Trials with ``train.num_workers`` > 1 keep Ray Train (DDP across the workers).
    ``FORA_TRIAL_WORKER_GROUP=1`` in the environment forces the worker group (``benchmarks/bench_sweep_trials.py``
    compares the two)."""
    return run.train.num_workers == 1 and os.environ.get("FORA_TRIAL_WORKER_GROUP", "") != "1"


def trial_resources(run: RunConfig) -> dict[str, float]:
    """What Tune reserves for one trial's own process: the whole trial when it trains in-process, else just
    its driver (the Ray Train workers reserve their own)."""
    if not in_process_trials(run):
        return {"CPU": TRIAL_DRIVER_CPU}
    return {"CPU": TRIAL_DRIVER_CPU + run.train.cpus_per_worker, **({"GPU": 1} if run.train.use_gpu else {})}


def trial_driver(params: dict[str, Any], ctx: dict[str, Any]) -> None:
    """One trial with this trial's method, K and lrs: the training loop in this process (one worker,
    :func:`in_process_trials`) or as a Ray Train run of ``train.num_workers`` workers (the train step's
    builder, ``training/trainer.py``: the same backend, placement and failure budget)."""
    from ray import tune  # [ray]
    from ray.tune.integration.ray_train import TuneReportCallback  # [ray]

    base = ctx["run"]
    arm = params["arm"]
    settings = trial_settings(params)
    run = RunConfig.from_dict(arm_run_dict(base, settings))
    report, _ = load_selection(ctx["calibration"])
    layers = select_layers(report, arm["K"]) if arm["method"] in FISHER_METHODS else list(range(report.num_layers))
    trial_id = tune.get_context().get_trial_id()  # [ray]
    child = trial_mlflow_run(ctx, trial_id, arm, settings, run.seed, layers)

    # a trial restarted after an interruption continues from its own last checkpoint (Ray Train restores
    # the run of the same name and storage path)
    loop = LoopConfig(run=run, data_dir=ctx["data_dir"], layers=layers, calib_dir=ctx["calibration"],
                      tracking_uri=ctx["tracking_uri"], mlflow_run_id=child, report_val_loss_every_step=True,
                      run_key=trial_id, fingerprint=checkpoints.fingerprint(run, ctx["data_hash"], layers))
    if in_process_trials(run):  # one worker: the loop runs here, reporting to Tune directly
        train_loop_per_worker(replace(loop, where="tune"))
        return
    trainer = build_torch_trainer(run, replace(loop, where="ray"), f"train-{trial_id}", ctx["storage"],
                                  callbacks=[TuneReportCallback()])  # [ray]
    trainer.fit()  # [ray]


def trial_mlflow_run(ctx: dict[str, Any], trial_id: str, arm: dict, settings: dict, seed: int,
                     layers: list[int]) -> str:
    """The trial's MLflow child run under the sweep's parent (found again when the trial restarts)."""
    import mlflow

    client = mlflow.MlflowClient(ctx["tracking_uri"])
    found = client.search_runs([ctx["experiment_id"]], f"tags.`fora.trial_id` = '{trial_id}'")
    if found:
        return found[0].info.run_id
    child = client.create_run(ctx["experiment_id"], run_name=f"trial {trial_id}: {arm['method']} K={arm['K']}",
                              tags={"mlflow.parentRunId": ctx["parent_run_id"], "fora.trial_id": trial_id}).info.run_id
    for k, v in {"method": arm["method"], "K": arm["K"], "lr": settings["lr"], "stiefel_lr": settings["stiefel_lr"],
                 "seed": seed, "layers": json.dumps(layers)}.items():
        client.log_param(child, k, v)
    return child


def plan(run: RunConfig) -> tuple[int, list[dict], int]:
    """Check the sweep before any work: (L, the (method, K) arms, the number of trials)."""
    num_layers = num_decoder_layers(run)
    arms = build_arms(run, num_layers)
    n_trials = count_trials(run, arms)
    if n_trials > run.sweep.max_trials:
        raise RunConfigError(f"the sweep has {n_trials} trials but 'sweep.max_trials' is {run.sweep.max_trials}: "
                             "raise the budget or shrink the search space")
    return num_layers, arms, n_trials
