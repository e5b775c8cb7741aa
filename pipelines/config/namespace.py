"""The Kubernetes namespace a process runs in, and the ``{namespace}`` placeholder of storage URIs.

Kubeflow's profile controller gives each profile namespace object-store keys that may use only
``mlpipeline/private/<namespace>/*`` (and ``artifacts/``, ``shared/``, ``private-artifacts/<namespace>/``) of KFP's
bucket (kubeflow/pipelines ``manifests/kustomize/base/installs/multi-user/pipelines-profile-controller/sync.py``: the
user policy and the ListBucket bucket policy). So the cluster config keeps everything under
``s3://mlpipeline/private/{namespace}/...``: one config for every tenant, each tenant's runs, caches and serving
bases in its own prefix. The placeholder is replaced when the config is read: from ``POD_NAMESPACE`` (the Ray and
MLflow pods set it from the downward API), else the pod's ServiceAccount namespace file (every KFP step pod
mounts one), else ``FORA_NAMESPACE`` (a laptop submitting for a namespace); when none is known it stays, and the
storage layer refuses to use it in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

PLACEHOLDER = "{namespace}"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def current_namespace() -> str:
    """The namespace of this pod (or the one named by POD_NAMESPACE / FORA_NAMESPACE); '' when none is known."""
    if os.environ.get("POD_NAMESPACE", "").strip():
        return os.environ["POD_NAMESPACE"].strip()
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return os.environ.get("FORA_NAMESPACE", "").strip()


def expand(uri: str) -> str:
    """``uri`` with ``{namespace}`` replaced by the current namespace when one is known (else unchanged)."""
    if PLACEHOLDER not in uri:
        return uri
    namespace = current_namespace()
    return uri.replace(PLACEHOLDER, namespace) if namespace else uri


def unresolved_message(uri: str) -> str:
    return (f"{uri}: '{PLACEHOLDER}' is the Kubernetes namespace of the pod, and none is known here: set "
            "POD_NAMESPACE (or FORA_NAMESPACE) to the namespace whose prefix to use")
