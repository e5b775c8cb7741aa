"""Run the five stages in order in this process (Ray Train for the train stage), tracked in one MLflow run.

This is ``fora run CONFIG --in-process`` (the default on a laptop); ``fora run CONFIG --kfp`` runs the
same stages as KFP components on the local KFP runner, and on a cluster they run as the compiled pipeline.
Every output lands under ``output_dir``:

    data/ (splits, data_card.{json,md})  calibration/ (fisher_report.json, fisher_profile.png)
    train/adapter/ (PEFT)  eval/ (eval_results.json, eval_table.md)  merged/ (plain transformers model)
    mlflow.db + mlartifacts/ (tracking and registry, unless register.tracking_uri says otherwise)
    nights/<finished>-<run id>/ (the earlier runs' outputs, ``nights.py``)
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator

from ..config.run_config import RunConfig
from ..runtime.models import model_source
from ..runtime.reachability import check_local_gpus
from . import stages
from .nights import archive_previous_night

log = logging.getLogger("fora")


@contextlib.contextmanager
def _stage(name: str, folder) -> Iterator[None]:
    """On a failure (or an interruption) inside the stage: the MLflow run gets ``fora.failed_step`` (and ends
    FAILED, by ``stages.tracked``), and the log says which folder is incomplete."""
    import mlflow

    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            mlflow.set_tag("fora.failed_step", name)
        log.error("the %s step did not finish: %s is incomplete and the MLflow run is marked FAILED; rerun the "
                  "same command (finished steps are redone, training resumes from its last checkpoint)",
                  name, folder)
        raise


def run_pipeline(run: RunConfig, progress: bool = True) -> dict:
    """All five stages; returns a summary with per-stage seconds, eval results and the registered version."""
    import mlflow

    out = run.out.resolve()
    timings: dict[str, float] = {}
    check_local_gpus(run)
    resolved = stages.resolve(run)  # every check first; it creates output_dir and the MLflow run only after them
    run_id = resolved["run_id"]
    archive_previous_night(out, run.register.model_name)
    if resolved["skip"]:
        log.info("nothing to do: %s", resolved["reason"])
        summary = {"run_id": run_id, "skipped": True, "reason": resolved["reason"], "output_dir": str(out),
                   "tracking_uri": run.tracking_uri, "source_fingerprint": resolved["source_fingerprint"]}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
    with stages.tracked(run, run_id), _stage("data prep", out / "data"):
        t = time.perf_counter()
        log.info("[1/5] data prep: %s", run.data.source)
        model, tokenizer = model_source(run).load()
        card = stages.data_prep(run, out / "data", run_id, tokenizer=tokenizer, progress=progress,
                                source_fingerprint=resolved["source_fingerprint"])
        timings["data_prep"] = time.perf_counter() - t

    with stages.tracked(run, run_id), _stage("calibrate", out / "calibration"):
        t = time.perf_counter()
        log.info("[2/5] Fisher calibration on %d sequences", card["counts"]["calibration"])
        calib = stages.calibrate(run, out / "data", out / "calibration", run_id, model, tokenizer, progress)
        timings["fisher"] = time.perf_counter() - t

    with stages.tracked(run, run_id), _stage("train", out / "train"):
        t = time.perf_counter()
        log.info("[3/5] training %s for %d steps (Ray Train: %s)", run.fora.method, run.train.max_steps,
                 run.train.use_ray)
        trained = stages.train(run, out / "data", out / "calibration", out / "train", run_id, progress)
        timings["train"] = time.perf_counter() - t

    with stages.tracked(run, run_id), _stage("evaluate", out / "eval"):
        t = time.perf_counter()
        log.info("[4/5] lm-eval on %s (limit %d), base vs tuned", ",".join(run.eval.tasks), run.eval.limit)
        results = stages.evaluate(run, out / "data", trained["adapter_dir"], out / "eval", run_id, model, tokenizer)
        timings["evaluate"] = time.perf_counter() - t

    with stages.tracked(run, run_id), _stage("register", out / "merged"):
        t = time.perf_counter()
        log.info("[5/5] merge and register '%s'", run.register.model_name)
        reg = stages.register(run, out / "data", out / "calibration", trained["adapter_dir"], out / "eval",
                              out / "merged", run_id)
        timings["register"] = time.perf_counter() - t
        mlflow.log_metrics({f"seconds/{k}": v for k, v in timings.items()})
        if trained.get("first_step_s") is not None:
            mlflow.log_metric("seconds/train_to_first_step", trained["first_step_s"])
    summary = {"run_id": run_id, "timings": timings, "results": results, "registration": reg,
               "selected_layers": calib["selected_layers"], "output_dir": str(out),
               "tracking_uri": run.tracking_uri, "train": {k: v for k, v in trained.items() if k != "metrics"}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
