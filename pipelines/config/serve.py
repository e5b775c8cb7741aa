"""The ``serve:`` section of the run config: how a registered version is put behind an endpoint, as a KServe
``InferenceService`` (``fora serve-manifest``, and the pipeline's optional deploy step). The rendering is
``pipelines/serving/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .checks import check_bool, check_int, fail
from .namespace import expand as expand_namespace
from .resources import CPU_QUANTITY, MEMORY_QUANTITY

FORMS = ("auto", "merged", "adapter")
BACKENDS = ("auto", "vllm", "huggingface")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass
class ServeConfig:
    name: str = ""
    """The InferenceService's name (a DNS label); '' = the registered model's name, lower-cased, dots to '-'."""
    namespace: str = ""
    """Its namespace; '' = the pipeline's own namespace (in a pod), else kubectl's current one (no field)."""
    form: str = "auto"
    """auto: the merged model when the version holds one, else base model + LoRA adapter; merged; adapter (the
    base model with the run's PEFT adapter loaded by vLLM's LoRA support: needs a GPU)."""
    backend: str = "auto"
    """KServe Hugging Face runtime's backend: auto (vLLM with a GPU and an architecture vLLM serves, else the
    Hugging Face transformers backend), vllm, huggingface."""
    gpus: int = 1
    """GPUs of the predictor (0: CPU serving with the Hugging Face backend)."""
    cpu: str = "4"
    memory: str = "16Gi"
    service_account: str = "fora-serving"
    """The predictor's ServiceAccount: KServe's storage initializer reads S3 with the Secret it names
    (``k8s/components/serving``)."""
    base_uri: str = ""
    """Adapter form: where the server reads the base model (hf://<id> or s3://...); '' = from the model spec
    when it is a hub id or an s3:// folder (a built-in or local base must be uploaded: ``--upload-base``)."""
    artifacts_destination: str = ""
    """The MLflow server's ``--artifacts-destination`` when it proxies artifacts (``mlflow-artifacts:/`` URIs):
    the model server reads the version's files from that bucket path (k8s/base/mlflow.yaml:
    s3://mlpipeline/private/{namespace}/fora-pipelines/mlflow-artifacts; ``{namespace}`` as in storage.uri). '' = the
    artifact URIs are already storage URIs (s3://)."""
    max_model_len: int = 0
    """vLLM's --max-model-len (0: the model's own)."""
    deploy: bool = False
    """The pipeline's deploy step applies (creates or patches) the InferenceService when the run's version
    becomes the champion; false: it only writes the manifest as an output artifact."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or (self.name and not DNS_LABEL.match(self.name)):
            fail("serve.name", self.name, "'' or a DNS label: lower-case letters, digits and '-', at most 63")
        if not isinstance(self.namespace, str) or (self.namespace and not DNS_LABEL.match(self.namespace)):
            fail("serve.namespace", self.namespace, "'' or a Kubernetes namespace name")
        if self.form not in FORMS:
            fail("serve.form", self.form, ", ".join(FORMS))
        if self.backend not in BACKENDS:
            fail("serve.backend", self.backend, ", ".join(BACKENDS))
        check_int("serve.gpus", self.gpus, 0)
        for name, form, example in (("cpu", CPU_QUANTITY, "'4', '0.5' or '500m'"),
                                    ("memory", MEMORY_QUANTITY, "'16Gi', '512Mi'")):
            value = getattr(self, name)
            if not isinstance(value, str) or not form.match(value):
                fail(f"serve.{name}", value, f"a Kubernetes quantity: {example}")
        if not isinstance(self.service_account, str) or not DNS_LABEL.match(self.service_account):
            fail("serve.service_account", self.service_account, "a ServiceAccount name")
        if not isinstance(self.base_uri, str) or (self.base_uri and not self.base_uri.startswith(
                ("hf://", "s3://", "gs://", "pvc://", "https://"))):
            fail("serve.base_uri", self.base_uri, "'' or a storage URI KServe reads: hf://, s3://, gs://, pvc://")
        if not isinstance(self.artifacts_destination, str) or (
                self.artifacts_destination and not self.artifacts_destination.startswith(("s3://", "gs://"))):
            fail("serve.artifacts_destination", self.artifacts_destination, "'' or the server's s3:// destination")
        self.artifacts_destination = expand_namespace(self.artifacts_destination)
        check_int("serve.max_model_len", self.max_model_len, 0)
        check_bool("serve.deploy", self.deploy)
        if self.form == "adapter" and self.gpus == 0:
            fail("serve.form", self.form, "merged or auto when serve.gpus is 0: vLLM's LoRA serving needs a GPU")
        if self.backend == "vllm" and self.gpus == 0:
            fail("serve.backend", self.backend, "auto or huggingface when serve.gpus is 0")
