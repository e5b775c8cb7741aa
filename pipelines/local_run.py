"""Run the five steps in order in this process (Ray Train for the train step), tracked in one MLflow run.

This is what ``fora run CONFIG`` does on a laptop; on a cluster the same step functions run as KFP
components. Every output lands under ``output_dir``:

    data/ (splits, data_card.json)  calibration/ (fisher_report.json, fisher_profile.png)
    train/adapter/ (PEFT)  eval/ (eval_results.json, eval_table.md)  merged/ (plain transformers model)
    mlflow.db + mlartifacts/ (tracking and registry, unless register.tracking_uri says otherwise)
"""

from __future__ import annotations

import json
import logging
import os
import time

from fora_core import ModelSource

from .run_config import RunConfig
from .steps.calibrate import run_calibration
from .steps.data_prep import data_card_markdown, prepare_data
from .steps.evaluate import run_evaluation
from .steps.register import merge_to_folder, register_model
from .steps.train import run_training

log = logging.getLogger("fora")


def _flat_params(run: RunConfig) -> dict[str, str]:
    out = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = str(value)[:500]
    walk("", run.to_dict())
    return out


def run_pipeline(run: RunConfig, progress: bool = True) -> dict:
    """All five steps; returns a summary with per-step seconds, eval results and the registered version."""
    import mlflow

    out = run.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HOME", str(out.parent / ".hf-home"))
    timings: dict[str, float] = {}
    mlflow.set_tracking_uri(run.tracking_uri)
    if run.tracking_uri.startswith("sqlite:") and mlflow.get_experiment_by_name(run.register.experiment) is None:
        mlflow.create_experiment(run.register.experiment, artifact_location=(out / "mlartifacts").as_uri())
    mlflow.set_experiment(run.register.experiment)
    with mlflow.start_run(run_name=run.name) as active:
        run_id = active.info.run_id
        mlflow.log_params(_flat_params(run))

        t = time.perf_counter()
        log.info("[1/5] data prep: %s", run.data.source)
        model, tokenizer = ModelSource(run.model, dtype=run.dtype).load()
        card = prepare_data(run.data, tokenizer, out / "data", progress=progress)
        (out / "data" / "data_card.md").write_text(data_card_markdown(card))
        mlflow.log_artifact(str(out / "data" / "data_card.json"), "data")
        mlflow.log_artifact(str(out / "data" / "data_card.md"), "data")
        timings["data_prep"] = time.perf_counter() - t

        t = time.perf_counter()
        log.info("[2/5] Fisher calibration on %d sequences", card["counts"]["calibration"])
        calib = run_calibration(model, tokenizer, out / "data", run.fora, out / "calibration", progress=progress)
        layers = calib["selected_layers"]
        mlflow.log_artifacts(str(out / "calibration"), "calibration")
        mlflow.log_param("selected_layers", json.dumps(layers))
        timings["fisher"] = time.perf_counter() - t
        log.info("      selected %d of %d layers: %s", len(layers), calib["report"].num_layers, layers)

        t = time.perf_counter()
        log.info("[3/5] training %s for %d steps (Ray Train: %s)", run.fora.method, run.train.max_steps,
                 run.train.use_ray)
        trained = run_training(run, out / "data", layers, out / "train", mlflow_run_id=run_id, progress=progress)
        timings["train"] = time.perf_counter() - t

        t = time.perf_counter()
        log.info("[4/5] lm-eval on %s (limit %d), base vs tuned", ",".join(run.eval.tasks), run.eval.limit)
        results = run_evaluation(model, tokenizer, trained["adapter_dir"], out / "data", run.eval.tasks,
                                 run.eval.limit, out / "eval", run.eval.batch_size, run.eval.compare_base,
                                 run.eval.perplexity)
        for who, r in results.items():
            mlflow.log_metrics({f"{who}/{t_}/acc": v["acc"] for t_, v in r["tasks"].items()})
            mlflow.log_metric(f"{who}/acc_avg", r["acc_avg"])
            if "perplexity" in r:
                mlflow.log_metric(f"{who}/perplexity", r["perplexity"])
        mlflow.log_artifact(str(out / "eval" / "eval_results.json"), "eval")
        mlflow.log_artifact(str(out / "eval" / "eval_table.md"), "eval")
        timings["evaluate"] = time.perf_counter() - t

        t = time.perf_counter()
        log.info("[5/5] merge and register '%s'", run.register.model_name)
        merged = merge_to_folder(ModelSource(run.model, dtype=run.dtype), trained["adapter_dir"], out / "merged")
        metric_value = results["tuned"][run.register.metric] if run.register.metric in results["tuned"] else \
            results["tuned"]["acc_avg"]
        tags = {"method": run.fora.method, "K": str(len(layers)), "selected_layers": json.dumps(layers),
                "data_hash": card["content_hash"], "base_model": run.model}
        reg = register_model(run_id=run_id, tracking_uri=run.tracking_uri, model_name=run.register.model_name,
                             merged_dir=merged, adapter_dir=trained["adapter_dir"], tags=tags,
                             metric=run.register.metric, value=metric_value,
                             greater_is_better=run.register.greater_is_better)
        timings["register"] = time.perf_counter() - t
        mlflow.log_metrics({f"seconds/{k}": v for k, v in timings.items()})
    summary = {"run_id": run_id, "timings": timings, "results": results, "registration": reg,
               "selected_layers": layers, "output_dir": str(out), "tracking_uri": run.tracking_uri}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
