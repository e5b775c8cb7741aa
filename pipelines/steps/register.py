"""Step 5, merge / register: fold the adapter into the base weights, keep the adapter-only artifact, log
everything to MLflow, register a model version with tags, and move the ``champion`` alias only when the
chosen metric beats the current champion's.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from fora_core import ModelSource, load_adapter, merge_adapter

CHAMPION = "champion"


class MergedModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict`` takes a list of prompts (or a DataFrame with a 'prompt' column) and
    returns generated continuations from the merged model."""

    def load_context(self, context) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts["merged_model"])
        self.model = AutoModelForCausalLM.from_pretrained(context.artifacts["merged_model"])

    def predict(self, context, model_input, params=None):
        prompts = list(model_input["prompt"]) if hasattr(model_input, "columns") else list(model_input)
        outs = []
        for p in prompts:
            ids = self.tokenizer(p, return_tensors="pt")
            gen = self.model.generate(**ids, max_new_tokens=(params or {}).get("max_new_tokens", 32))
            outs.append(self.tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        return outs


def merge_to_folder(source: ModelSource, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """W <- W0 + (alpha/r) B A at the adapted layers; saves a plain transformers model + tokenizer.

    The base model is loaded afresh from ``source``: a model object that has carried PEFT adapters (even
    unloaded ones) keeps PEFT markers that make ``save_pretrained`` write an adapter instead of weights.
    """
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    base_model, tokenizer = source.load()
    peft_model, _, _ = load_adapter(base_model, adapter_dir)
    merged = merge_adapter(peft_model)
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
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
        info = mlflow.pyfunc.log_model(name="model", python_model=MergedModel(),
                                       artifacts={"merged_model": str(merged_dir)})
        mlflow.log_metric(metric, value)
    try:
        client.get_registered_model(model_name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(model_name, description="FoRA fine-tuned models (fora-pipelines)")
    version = client.create_model_version(model_name, info.model_uri, run_id=run_id, tags=tags)
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
