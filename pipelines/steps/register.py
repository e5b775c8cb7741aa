"""Step 5, merge / register: fold the adapter into the base weights, keep the adapter-only artifact, log
everything to MLflow, register a model version with tags, and move the ``champion`` alias only when the
paired test over the evaluation's items says the challenger beats the current champion
(``registry/promotion.py``).
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

from ..config.errors import RunConfigError
from ..config.run_config import RunConfig
from ..evaluation.metrics import higher_is_better
from ..registry.champion import CHAMPION, version_by_alias
from ..registry.guards import broken_guards
from ..registry.promotion import DECISION_TAG, Challenger, Policy, decide_and_apply
from ..runtime.atomic import replace_dir


def challenger_of(run: RunConfig, results: dict, per_item: dict, card: dict, by: str) -> tuple[Challenger, str, float]:
    """(the challenger's per-item scores on ``register.metric``, the metric, its value), with the guards it
    breaks; a metric the evaluation did not produce is one line naming it and what was produced."""
    metric = run.register.metric
    if per_item.get("format") != 2:
        raise RunConfigError("item_scores.json was written by an older version of the evaluate step: re-run evaluate")
    tuned = per_item["tuned"]
    if metric not in tuned["items"] or metric not in tuned["metrics"]:
        produced = ", ".join(sorted(m for m in tuned["items"] if m in tuned["metrics"])) or "no per-item metric"
        raise RunConfigError(f"invalid value for 'register.metric': {metric!r} was not produced by the evaluation "
                             f"(produced: {produced})")
    directions = {**results.get("directions", {}), **per_item.get("directions", {})}
    measured = per_item.get("champion")
    champion_items = (measured or {}).get("items", {}).get(metric)
    base_metrics = results.get("base", {}).get("metrics") if "base" in results else None
    return Challenger(
        version=0, items=tuned["items"][metric], suite=per_item["suite"], metric=metric,
        higher_is_better=higher_is_better(metric, declared=directions),
        measured={"version": measured["version"], "items": champion_items,
                  "source": measured.get("source", "scored in this run")} if measured and champion_items else None,
        data_fingerprint=card.get("source_fingerprint", card["content_hash"]), by=by,
        broken_guards=broken_guards(run.register.guards, results["tuned"]["metrics"], base_metrics, directions),
    ), metric, float(tuned["metrics"][metric])


def merge_to_folder(source: ModelSource, adapter_dir: str | Path, out_dir: str | Path,
                    device: str = "cpu") -> Path:
    """W <- W0 + (alpha/r) B A at the adapted layers; saves a plain transformers model + tokenizer.

    The base model is loaded afresh from ``source``: a model object that has carried PEFT adapters (even
    unloaded ones) keeps PEFT markers that make ``save_pretrained`` write an adapter instead of weights.
    Written beside ``out_dir`` and swapped into place (``atomic.replace_dir``), so a crash never leaves half a
    model there, nor no model where an older one was.
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
        replace_dir(staging / "model", out)  # the old merged folder stays until the new one is whole
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _signature() -> dict:
    """Prompts in, continuations out (strings), with an example: what the MLflow UI and serving show."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    signature = ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string")]),
                               params=ParamSchema([ParamSpec("max_new_tokens", "long", 32)]))
    return {"signature": signature, "input_example": ["Question: Why is the sky blue?\nAnswer:"]}


SERVING_PACKAGES = ("mlflow", "torch", "transformers", "peft", "safetensors", "accelerate", "fora-pipelines")


def _log_pyfunc(name: str, data_path: str | Path):
    """``mlflow.pyfunc.log_model`` of our loader over ``data_path``, minus two hidden model loads.

    MLflow would (1) infer pip requirements by loading the model in a subprocess and recording its imports
    (for this loader it missed torch and peft), and (2) load it again to predict the input example. For an 8B
    model that is two full loads and a CPU generation inside the register step. The requirements are
    stated instead (the versions installed here), and the example is stored but not run; loading and
    predicting a registered version is what the tests do (test_cli, test_registry)."""
    from importlib.metadata import PackageNotFoundError, version

    from mlflow.models import Model

    requirements = []
    for package in SERVING_PACKAGES:
        try:
            requirements.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return Model.log(artifact_path=None, name=name, flavor=_PyfuncNoServingCheck, flavor_name="pyfunc",
                     loader_module="pipelines.registry.pyfunc_model", data_path=str(data_path), pip_requirements=requirements,
                     validate_serving_input=False, **_signature())


class _PyfuncNoServingCheck:
    """``mlflow.pyfunc`` as a flavour for ``Model.log``, accepting the ``validate_serving_input`` switch that
    ``Model.log`` reads but ``mlflow.pyfunc.save_model`` refuses as an unknown argument."""

    __name__ = "mlflow.pyfunc"

    @staticmethod
    def save_model(path, mlflow_model, validate_serving_input: bool = True, **kwargs):
        return mlflow.pyfunc.save_model(path=path, mlflow_model=mlflow_model, **kwargs)


RUN_DECISION_TAGS = ("fora.decision", "fora.decision_version", "fora.decision_reason")


def tag_run_with_decision(client: MlflowClient, run_id: str, model_name: str, version: int, decision: dict) -> None:
    """The decision on the run too (the version's tags hold it already): runs are what people list and filter,
    ``tags.`fora.decision` = 'keep'`` in the MLflow UI's search."""
    values = (decision["action"], f"{model_name} v{version}", decision["reason"][:5000])
    for key, value in zip(RUN_DECISION_TAGS, values, strict=True):
        client.set_tag(run_id, key, value)


def _version_of_run(client: MlflowClient, model_name: str, run_id: str):
    """The version this run registered already (a retried register step), or None."""
    found = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    return max(found, key=lambda v: int(v.version)) if found else None


def register_model(
    *, run_id: str, tracking_uri: str, model_name: str, merged_dir: str | Path, adapter_dir: str | Path,
    tags: dict[str, str], challenger: Challenger, policy: Policy, metric: str, value: float,
    adapter_package_dir: str | Path | None = None,
) -> dict:
    """Log the model (pyfunc over ``merged_dir``: the merged model, or the adapter package) and the adapter
    to ``run_id``, register a version, and let
    ``registry/promotion.py`` decide on the alias (paired test against the champion, under the lock).

    A retry of the same run (a crash after the version was created) reuses its version instead of
    registering a duplicate. Returns the decision (``registry.history`` entry) with ``version`` and
    ``champion`` (whether it is the champion now)."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    try:
        client.get_registered_model(model_name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(model_name, description="FoRA fine-tuned models (fora-pipelines)")
    version = _version_of_run(client, model_name, run_id)
    if version is not None and version.tags.get("promotion", "pending") != "pending":
        # a retry after the decision was made: report it, decide nothing twice
        decision = json.loads(version.tags[DECISION_TAG])
        current = version_by_alias(client, model_name, CHAMPION)
        return {**decision, "version": int(version.version), "promoted": decision["action"] == "promote",
                "proposed": decision["action"] == "propose",
                "champion": current is not None and current.version == version.version, "retried": True}
    if version is None:
        active = mlflow.active_run()
        same = active is not None and active.info.run_id == run_id
        with contextlib.nullcontext() if same else mlflow.start_run(run_id=run_id):
            mlflow.log_artifacts(str(adapter_dir), artifact_path="adapter")
            # a loader module and plain data (safetensors): nothing in the artifact is unpickled or executed
            info = _log_pyfunc("model", merged_dir)
            if adapter_package_dir is not None:  # register.artifact: both (the adapter form beside)
                _log_pyfunc("model_adapter", adapter_package_dir)
            mlflow.log_metric(metric, value)
        # model_id: an MLflow server (REST store) refuses a models:/ source without it; SQLite accepts either
        version = client.create_model_version(model_name, info.model_uri, run_id=run_id,
                                              tags={**tags, "promotion": "pending"}, model_id=info.model_id)
    challenger.version = int(version.version)
    decision = decide_and_apply(client, tracking_uri, model_name, challenger, policy)
    client.set_model_version_tag(model_name, version.version, "promotion", decision["action"])
    tag_run_with_decision(client, run_id, model_name, int(version.version), decision)
    return {**decision, "version": int(version.version), "champion": decision["promoted"]
            or decision["reason"].startswith("already champion")}


def write_prompt_format_for(run: RunConfig, card: dict, folder: Path) -> None:
    """``fora_prompt.json`` (``registry/pyfunc_model.py``): chat data -> prompts are user turns of the template."""
    from ..data.chat import read_chat_template
    from ..registry.pyfunc_model import write_prompt_format

    chat = "chat" in card
    write_prompt_format(folder, chat, read_chat_template(run.data.chat_template)
                        if chat and run.data.chat_template else None,
                        system_prompt=run.data.system_prompt if chat else "template")


def adapter_package(run: RunConfig, adapter: Path, out: str | Path) -> Path:
    """The adapter-only form of a registered model: the PEFT adapter files and ``fora_base.json`` naming
    the base model (``pipelines/registry/pyfunc_model.py`` loads the base, applies and merges the adapter)."""
    import shutil
    import tempfile

    from ..registry.pyfunc_model import BASE_FILE
    from ..runtime.atomic import replace_dir

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        shutil.copytree(adapter, staging / "package")
        (staging / "package" / BASE_FILE).write_text(json.dumps({"model": run.model, "dtype": run.dtype}))
        replace_dir(staging / "package", out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
