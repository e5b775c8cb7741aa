"""The pipeline's deploy step: the InferenceService of the version this run registered, written as an output
artifact every time, and applied to the cluster (created, or replaced when it exists) only when
``serve.deploy`` is true **and** that version is the champion now. A version that did not win leaves the
serving endpoint as it is.

Applying goes through the Kubernetes API with the step pod's ServiceAccount; ``k8s/components/serving`` grants
it exactly get/create/update/patch on ``inferenceservices`` in its namespace. A replace carries the live
object's ``resourceVersion``, so a concurrent change is refused (409), never overwritten unseen.
"""

from __future__ import annotations

from typing import Any

from ..config.errors import RunConfigError
from ..config.namespace import current_namespace
from ..config.run_config import RunConfig
from ..registry.champion import CHAMPION, version_by_alias
from .handoff import manifest_for

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


class DeployError(RunConfigError):
    """The Kubernetes API refused or could not be reached; one line naming the object and the reason."""


def _api():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def kubeconfig_namespace() -> str:
    """The namespace of the kubeconfig's current context, as kubectl uses it ('default' when it names none)."""
    import os

    from kubernetes import config

    try:  # KUBECONFIG as it is now (the client reads its default location once, at import)
        _, active = config.list_kube_config_contexts(config_file=os.environ.get("KUBECONFIG") or None)
    except (config.ConfigException, OSError, TypeError):
        return "default"
    return (active or {}).get("context", {}).get("namespace") or "default"


def apply_inference_service(manifest: dict[str, Any], api=None) -> str:
    """Create the InferenceService, or replace the live one (keeping its resourceVersion); 'created' or
    'replaced'. ``api``: a ``kubernetes.client.CustomObjectsApi`` (default: in-cluster, else kubeconfig)."""
    from kubernetes.client.exceptions import ApiException

    api = api or _api()
    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"].get("namespace") or current_namespace() or kubeconfig_namespace()
    where = f"InferenceService {namespace}/{name}"
    try:
        try:
            live = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as err:
            if err.status != 404:
                raise
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
            return "created"
        body = {**manifest, "metadata": {**manifest["metadata"],
                                         "resourceVersion": live["metadata"]["resourceVersion"]}}
        api.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)
        return "replaced"
    except ApiException as err:
        hint = (" (the step's ServiceAccount needs get/create/update on inferenceservices: k8s/components/serving)"
                if err.status == 403 else " (is KServe installed? its CRD serves inferenceservices)"
                if err.status == 404 else "")
        raise DeployError(f"{where}: the Kubernetes API answered {err.status} {err.reason}{hint}") from None


def deploy(run: RunConfig, version: int, api=None) -> tuple[dict[str, Any] | None, str]:
    """(the manifest of ``version``, or None when it cannot be rendered, and what happened, in one line)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    champion = version_by_alias(MlflowClient(run.tracking_uri), run.register.model_name, CHAMPION)
    is_champion = champion is not None and int(champion.version) == int(version)
    try:
        manifest, notes = manifest_for(run, str(version), upload_base=bool(run.storage.uri))
    except (RunConfigError, MlflowException, OSError) as err:  # never fails a run that did not ask to deploy
        if run.serve.deploy and is_champion:
            raise
        return None, f"no manifest: {str(err).strip().splitlines()[0]}"
    if not run.serve.deploy:
        return manifest, f"manifest written (serve.deploy is false); {'; '.join(notes)}"
    if not is_champion:
        return manifest, f"version {version} is not the champion: the endpoint was left as it is"
    action = apply_inference_service(manifest, api)
    return manifest, f"InferenceService {manifest['metadata']['name']} {action} for champion version {version}"
