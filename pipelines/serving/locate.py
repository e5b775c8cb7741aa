"""Where a registered version's files are, as a model server reads them.

A version (``models:/<name>/<version>`` or ``@<alias>``) is an MLflow logged model: its ``MLmodel`` names the
data folder of our pyfunc (``flavors.python_function.data``: the merged transformers model, or the adapter
package with ``fora_base.json``), and its run holds the PEFT adapter under ``adapter/``. An MLflow server that
proxies artifacts (``--artifacts-destination s3://fora-mlflow/artifacts``, ``k8s/base/mlflow.yaml``) reports them
as ``mlflow-artifacts:/<path>``: the model server needs the bucket path itself, ``<destination>/<path>``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..config.errors import RunConfigError
from ..registry.champion import version_by_alias
from ..registry.pyfunc_model import BASE_FILE

PROXIED = "mlflow-artifacts:"


@dataclass(frozen=True)
class RegisteredFiles:
    model_name: str
    version: int
    artifact: str
    """merged, adapter or both (the register step's ``artifact`` tag)."""
    model_uri: str
    """The pyfunc's data folder: the merged transformers model (merged, both) or the adapter package."""
    adapter_uri: str
    """The run's PEFT adapter folder (every version has it)."""
    base_model: str
    """The base model spec the run trained on (built-in name, hub id, folder or s3:// URI)."""
    dtype: str


def storage_uri(uri: str, artifacts_destination: str) -> str:
    """An artifact URI as a model server reads it: ``mlflow-artifacts:/p`` (or ``mlflow-artifacts://host/p``)
    becomes ``<artifacts_destination>/p``; anything else is returned as it is."""
    if not uri.startswith(PROXIED):
        return uri
    if not artifacts_destination:
        raise RunConfigError(f"the version's files are behind the MLflow server's artifact proxy ({uri}); set "
                             "serve.artifacts_destination to the server's --artifacts-destination (k8s/base/mlflow.yaml: "
                             "s3://fora-mlflow/artifacts) so the model server can read them from the bucket")
    return artifacts_destination.rstrip("/") + "/" + urlparse(uri).path.lstrip("/")


def resolve_version(client: MlflowClient, model_name: str, ref: str):
    """The ModelVersion of ``ref``: a version number, or an alias (champion, challenger); one line if absent."""
    try:
        if ref.isdigit():
            return client.get_model_version(model_name, ref)
        found = version_by_alias(client, model_name, ref)
    except MlflowException as err:
        raise RunConfigError(f"registered model '{model_name}' version {ref}: {err.message.splitlines()[0]}") from None
    if found is None:
        raise RunConfigError(f"registered model '{model_name}' has no version with alias '{ref}' "
                             "(fora registry list CONFIG shows its versions)")
    return found


def locate(client: MlflowClient, model_name: str, ref: str) -> RegisteredFiles:
    """The files of version ``ref`` of ``model_name`` (a number or an alias), as stored (not yet mapped)."""
    import mlflow

    mv = resolve_version(client, model_name, ref)
    tracking = client.tracking_uri  # a proxied mlflow-artifacts:/ URI is read through this server
    # the logged model behind the version (a SQLite store keeps only its source, models:/<model id>)
    model_id = mv.model_id or (mv.source.removeprefix("models:/") if mv.source.startswith("models:/m-") else None)
    location = client.get_logged_model(model_id).artifact_location if model_id else mv.source
    with tempfile.TemporaryDirectory() as tmp:
        mlmodel = yaml.safe_load(Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"{location.rstrip('/')}/MLmodel", dst_path=tmp, tracking_uri=tracking)).read_text())
    data = mlmodel["flavors"]["python_function"].get("data", "")
    run = client.get_run(mv.run_id)
    params = run.data.params
    base = {"model": params.get("model", ""), "dtype": params.get("dtype", "float32")}
    artifact = mv.tags.get("artifact", "merged")
    model_uri = f"{location.rstrip('/')}/{data}".rstrip("/")
    if artifact == "adapter":
        with tempfile.TemporaryDirectory() as tmp:
            base = json.loads(Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"{model_uri}/{BASE_FILE}", dst_path=tmp, tracking_uri=tracking)).read_text())
    return RegisteredFiles(model_name=model_name, version=int(mv.version), artifact=artifact, model_uri=model_uri,
                           adapter_uri=f"{run.info.artifact_uri.rstrip('/')}/adapter", base_model=base["model"],
                           dtype=base.get("dtype", "float32"))
