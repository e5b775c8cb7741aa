"""Step 5, merge / register: fold the adapter into the base weights, keep the adapter-only artifact, log
everything to MLflow, register a model version with tags, and move the ``champion`` alias only when the
chosen metric beats the current champion's.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from fora_core import ModelSource, load_adapter, merge_adapter

CHAMPION = "champion"


def merge_to_folder(source: ModelSource, adapter_dir: str | Path, out_dir: str | Path,
                    device: str = "cpu") -> Path:
    """W <- W0 + (alpha/r) B A at the adapted layers; saves a plain transformers model + tokenizer.

    The base model is loaded afresh from ``source``: a model object that has carried PEFT adapters (even
    unloaded ones) keeps PEFT markers that make ``save_pretrained`` write an adapter instead of weights.
    Written beside ``out_dir`` and renamed into place, so a crash never leaves half a model there.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    base_model, tokenizer = source.load(device)
    peft_model, _, _ = load_adapter(base_model, adapter_dir)
    merged = merge_adapter(peft_model)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        merged.save_pretrained(staging / "model", safe_serialization=True)
        tokenizer.save_pretrained(staging / "model")
        if out.exists():
            shutil.rmtree(out)
        (staging / "model").rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _metric_of(client: MlflowClient, version, metric: str) -> float | None:
    run = client.get_run(version.run_id)
    return run.data.metrics.get(metric)


def register_model(
    *, run_id: str, tracking_uri: str, model_name: str, merged_dir: str | Path, adapter_dir: str | Path,
    tags: dict[str, str], metric: str, value: float, greater_is_better: bool = True,
) -> dict:
    """Log the merged model (pyfunc) and adapter to ``run_id``, register a version, maybe move the alias.

    Returns {"version", "champion" (bool), "previous_champion_value"}.
    """
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    active = mlflow.active_run()
    same = active is not None and active.info.run_id == run_id
    with contextlib.nullcontext() if same else mlflow.start_run(run_id=run_id):
        mlflow.log_artifacts(str(adapter_dir), artifact_path="adapter")
        # a loader module and plain data (safetensors): nothing in the artifact is unpickled or executed
        info = mlflow.pyfunc.log_model(name="model", loader_module="pipelines.pyfunc_model",
                                       data_path=str(merged_dir))
        mlflow.log_metric(metric, value)
    try:
        client.get_registered_model(model_name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(model_name, description="FoRA fine-tuned models (fora-pipelines)")
    # model_id: an MLflow server (REST store) refuses a models:/ source without it; SQLite accepts either
    version = client.create_model_version(model_name, info.model_uri, run_id=run_id, tags=tags,
                                          model_id=info.model_id)
    previous = None
    try:
        champ = client.get_model_version_by_alias(model_name, CHAMPION)
        previous = _metric_of(client, champ, metric)
    except mlflow.exceptions.MlflowException:
        champ = None
    better = previous is None or (value > previous if greater_is_better else value < previous)
    if better:
        client.set_registered_model_alias(model_name, CHAMPION, version.version)
    client.set_model_version_tag(model_name, version.version, "champion_decision",
                                 json.dumps({"metric": metric, "value": value, "previous": previous,
                                             "promoted": better}))
    return {"version": int(version.version), "champion": better, "previous_champion_value": previous}
