"""The current champion: which version holds an alias, and the per-item scores it was measured with.

Reading an alias distinguishes "there is none" (the model or the alias does not exist) from any other
failure (a server error, a timeout): only the first means "no champion"; the second is raised, so a
transient 5xx can never be read as an empty registry and promote a model unopposed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"
ITEM_SCORES = "eval/item_scores.json"
"""The run artifact with per-item scores and the eval suite's fingerprint (``steps/evaluate.py``):
{"format": 2, "suite": "...", "directions": {metric: higher_is_better},
 "tuned": {"metrics": {metric: value}, "items": {metric: {task: [score, ...]}}, "generations": [...]},
 "base": {...}, "champion": {"version": v, ...}}."""


def _absent(err: MlflowException) -> bool:
    msg = str(err).lower()
    return err.error_code == "RESOURCE_DOES_NOT_EXIST" or (
        err.error_code == "INVALID_PARAMETER_VALUE" and "alias" in msg and "not found" in msg)


def version_by_alias(client: MlflowClient, model_name: str, alias: str = CHAMPION) -> ModelVersion | None:
    """The version ``alias`` points to; None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as err:
        if _absent(err):
            return None
        # MLflow's basic-auth server answers 403 for a registered model that does not exist yet (there is no
        # permission record to check); only then is it "none": a 403 on an existing model is raised
        if "403" in str(err) or err.error_code == "PERMISSION_DENIED":
            if not client.search_registered_models(filter_string=f"name = '{model_name}'"):
                return None
        raise


def stored_item_scores(tracking_uri: str, version: ModelVersion) -> dict | None:
    """The ``item_scores.json`` the version's run logged, or None (an older version, or no tasks scored)."""
    if not version.run_id:
        return None
    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory(prefix="fora-items-") as tmp:
        try:
            path = download_artifacts(run_id=version.run_id, artifact_path=ITEM_SCORES, dst_path=tmp,
                                      tracking_uri=tracking_uri)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(path).read_text())


def download_adapter(tracking_uri: str, version: ModelVersion, dst: str | Path) -> Path | None:
    """The version's adapter (the ``adapter`` artifact of its run) in ``dst``; None if its run has none."""
    from mlflow.artifacts import download_artifacts

    try:
        path = download_artifacts(run_id=version.run_id, artifact_path="adapter", dst_path=str(dst),
                                  tracking_uri=tracking_uri)
    except (MlflowException, OSError):
        return None
    return Path(path) if (Path(path) / "adapter_config.json").exists() else None


def champion_for_eval(tracking_uri: str, model_name: str, base_model: str, dst: str | Path) -> tuple[dict | None, str]:
    """({"version", "adapter_dir"}, why) of the current champion, ready to be scored on the same base
    weights as the challenger; (None, why) when there is no champion or it cannot be scored here."""
    client = MlflowClient(tracking_uri)
    champ = version_by_alias(client, model_name, CHAMPION)
    if champ is None:
        return None, "no champion yet"
    if champ.tags.get("base_model", base_model) != base_model:
        return None, (f"champion v{champ.version} is tuned from {champ.tags['base_model']}, not {base_model}: "
                      "not scored on the same base (promote by hand if it should be replaced)")
    adapter = download_adapter(tracking_uri, champ, dst)
    if adapter is None:
        return None, f"champion v{champ.version}'s run has no adapter artifact"
    return ({"version": int(champ.version), "adapter_dir": adapter, "logged": stored_item_scores(tracking_uri, champ)},
            f"champion v{champ.version}")
