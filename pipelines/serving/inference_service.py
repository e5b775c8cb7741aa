"""A KServe ``InferenceService`` (serving.kserve.io/v1beta1) for a registered version, on KServe's Hugging Face
serving runtime (``modelFormat: huggingface``; kserve/kserve ``python/huggingfaceserver``), in one of two forms:

* **merged**: ``storageUri`` is the version's merged transformers folder; the runtime's backend is vLLM (a GPU and
  an architecture vLLM serves) or Hugging Face transformers (CPU, or an architecture vLLM does not know);
* **adapter**: the base model and the run's PEFT adapter, each mounted from its own ``storageUris`` entry under
  ``/mnt/models`` (KServe requires a common parent), and vLLM's multi-LoRA serving: ``--enable-lora``,
  ``--max-lora-rank`` (the smallest vLLM accepts that holds r) and ``--lora-modules`` in the JSON form KServe's
  own LoRA test uses (``{"name", "path", "base_model_name"}``). Requests name the adapter as the model:
  ``"model": "<name>"``; the base stays reachable as ``<name>-base``.

The predictor runs under ``serve.service_account`` (``k8s/components/serving``), whose Secret gives KServe's
storage initializer the S3 endpoint and keys; no credential is written into the manifest.
"""

from __future__ import annotations

import json
from typing import Any

from ..config.serve import ServeConfig
from .vllm_lora import VllmAdapter

API_VERSION = "serving.kserve.io/v1beta1"
# KServe's Hugging Face ClusterServingRuntime (kserve/kserve config/runtimes/kserve-huggingfaceserver.yaml), named so
# the cluster admin's admission policy (k8s/cluster-admin/serving-policy) can hold the pipeline to it
RUNTIME = "kserve-huggingfaceserver"
MOUNT = "/mnt/models"
# KServe copies the InferenceService's labels onto the predictor pods (kserve/kserve
# pkg/controller/v1beta1/inferenceservice/components/predictor.go, buildObjectMeta), so these must not be ones our
# NetworkPolicies select (app.kubernetes.io/part-of=fora-pipelines is fora-default-deny's): the predictor's traffic is
# KServe's and the mesh's (Knative activator, Istio gateway, storage initializer), not ours to shut.
LABELS = {"app.kubernetes.io/component": "serving", "app.kubernetes.io/created-by": "fora-pipelines"}
# decoder architectures in vLLM's model registry (vllm/model_executor/models/registry.py) that our methods adapt
VLLM_ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma2ForCausalLM",
    "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration", "Phi3ForCausalLM", "GraniteForCausalLM",
    "OlmoForCausalLM", "Olmo2ForCausalLM", "GPT2LMHeadModel", "GPTNeoXForCausalLM", "StableLmForCausalLM",
})


def choose_backend(serve: ServeConfig, architecture: str | None) -> str:
    """vllm or huggingface: ``serve.backend`` when set, else vLLM with a GPU and a known architecture (or an
    unknown one: the adapter form, whose base is not read here)."""
    if serve.backend != "auto":
        return serve.backend
    if serve.gpus == 0:
        return "huggingface"
    return "vllm" if architecture is None or architecture in VLLM_ARCHITECTURES else "huggingface"


def _resources(serve: ServeConfig) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": serve.cpu, "memory": serve.memory}
    if serve.gpus:
        amounts["nvidia.com/gpu"] = str(serve.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def render(*, name: str, namespace: str, serve: ServeConfig, backend: str, model_name: str, version: int,
           merged_uri: str | None = None, base_uri: str | None = None, adapter_uri: str | None = None,
           adapter: VllmAdapter | None = None) -> dict[str, Any]:
    """The InferenceService as a dict: merged form with ``merged_uri``, adapter form with ``base_uri``,
    ``adapter_uri`` and the checked ``adapter``."""
    args = [f"--model_name={name}", f"--backend={backend}"]
    if serve.max_model_len:
        args.append(f"--max_model_len={serve.max_model_len}")
    model: dict[str, Any] = {"modelFormat": {"name": "huggingface"}, "runtime": RUNTIME, "resources": _resources(serve)}
    predictor: dict[str, Any] = {"serviceAccountName": serve.service_account, "minReplicas": 1, "model": model}
    if merged_uri is not None:
        form = "merged"
        model["storageUri"] = merged_uri
    else:
        if backend != "vllm" or adapter is None or base_uri is None or adapter_uri is None:
            raise ValueError("the adapter form needs vLLM, the base and adapter URIs and the checked adapter")
        form = "adapter"
        base_dir, adapter_dir = f"{MOUNT}/base", f"{MOUNT}/adapters/{name}"
        predictor["storageUris"] = [{"uri": base_uri, "mountPath": base_dir},
                                    {"uri": adapter_uri, "mountPath": adapter_dir}]
        args = [f"--model_name={name}-base", f"--model_dir={base_dir}", f"--backend={backend}", *args[2:],
                "--enable-lora", f"--max-lora-rank={adapter.max_lora_rank}", "--lora-modules",
                json.dumps({"name": name, "path": adapter_dir, "base_model_name": f"{name}-base"})]
    model["args"] = args
    metadata: dict[str, Any] = {"name": name, "labels": dict(LABELS), "annotations": {
        "fora-pipelines/registered-model": model_name, "fora-pipelines/version": str(version),
        "fora-pipelines/form": form}}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": "InferenceService", "metadata": metadata,
            "spec": {"predictor": predictor}}


def service_name(serve: ServeConfig, model_name: str) -> str:
    """``serve.name``, else the registered model's name as a DNS label (lower case, '.' and '_' to '-')."""
    if serve.name:
        return serve.name
    out = "".join(c if c.isalnum() or c == "-" else "-" for c in model_name.lower()).strip("-")
    return (out if out[:1].isalpha() else "m-" + out)[:63].rstrip("-")
