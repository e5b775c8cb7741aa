"""``fora serve-manifest``: the InferenceService of a registered version (a number or an alias such as
``champion``), every choice made from what the version holds:

* the form: ``serve.form`` (auto: merged when the version holds the merged model, else base + adapter);
* the backend: vLLM with a GPU and an architecture vLLM serves, else Hugging Face transformers;
* the adapter form: the run's adapter checked as vLLM's loader reads it (``vllm_lora.py``), the base model
  where the server can read it (``serve.base_uri``; an ``s3://`` spec; ``hf://<id>`` for a hub id; a built-in
  or local base uploaded under ``storage.uri`` with ``--upload-base``);
* the URIs: proxied ``mlflow-artifacts:/`` paths mapped to ``serve.artifacts_destination``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from ..config.errors import RunConfigError
from ..config.namespace import current_namespace
from ..config.run_config import RunConfig
from ..runtime import storage
from .inference_service import choose_backend, render, service_name
from .locate import RegisteredFiles, locate, storage_uri
from .vllm_lora import check_vllm_adapter

SERVER_SCHEMES = ("s3://", "gs://", "hf://", "pvc://", "https://")
def _download(uri: str, dest: Path, tracking_uri: str) -> Path:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest), tracking_uri=tracking_uri))


def _architecture(model_uri: str, tracking_uri: str) -> str | None:
    with tempfile.TemporaryDirectory() as tmp:
        config = json.loads(_download(f"{model_uri}/config.json", Path(tmp), tracking_uri).read_text())
    return (config.get("architectures") or [None])[0]


def base_uri(run: RunConfig, files: RegisteredFiles, upload: bool) -> str:
    """Where the model server reads the adapter's base model (see the module doc)."""
    from fora_core import ModelSource

    if run.serve.base_uri:
        return run.serve.base_uri
    spec = files.base_model
    if spec.startswith("s3://"):
        return spec
    source = ModelSource(spec, dtype=files.dtype)
    local = not source.is_builtin and Path(spec).expanduser().exists()
    if not source.is_builtin and not local:
        return "hf://" + spec  # a hub id: KServe's storage initializer downloads it
    if not upload:
        raise RunConfigError(f"the base model '{spec}' is a {'built-in' if source.is_builtin else 'local folder'} "
                             "the model server cannot read: set serve.base_uri (hf://<id> or s3://...) or pass "
                             "--upload-base (copies it under storage.uri)")
    if not run.storage.uri:
        raise RunConfigError("--upload-base needs storage.uri (an s3:// prefix the model server can read)")
    folder = Path(source.resolve())
    digest = hashlib.sha256("".join(f"{p.name}:{p.stat().st_size}" for p in sorted(folder.iterdir())
                                    if p.is_file()).encode()).hexdigest()[:12]
    target = storage.join(run.storage.uri, "serving-bases", f"{Path(spec).name}-{digest}")
    if not storage.exists(storage.join(target, "config.json")):
        storage.upload_dir(folder, target)
    return target


def manifest_for(run: RunConfig, ref: str, upload_base: bool = False) -> tuple[dict[str, Any], list[str]]:
    """(the InferenceService, notes for the user) of version ``ref`` of ``register.model_name``."""
    serve = run.serve
    files = locate(MlflowClient(run.tracking_uri), run.register.model_name, ref)
    form = serve.form if serve.form != "auto" else ("adapter" if files.artifact == "adapter" else "merged")
    if form == "merged" and files.artifact == "adapter":
        raise RunConfigError(f"'{files.model_name}' version {files.version} holds only the adapter "
                             "(register.artifact: adapter): serve it with serve.form=adapter, or register with "
                             "register.artifact=both")
    name = service_name(serve, files.model_name)
    common = {"name": name, "namespace": serve.namespace or current_namespace(), "serve": serve,
              "model_name": files.model_name, "version": files.version}
    notes = [f"'{files.model_name}' version {files.version} ({files.artifact}) as the {form} form"]
    if form == "merged":
        architecture = _architecture(files.model_uri, run.tracking_uri)
        backend = choose_backend(serve, architecture)
        uris = [storage_uri(files.model_uri, serve.artifacts_destination)]
        manifest = render(**common, backend=backend, merged_uri=uris[0])
        notes.append(f"{architecture}: the {backend} backend" + (" (no GPU)" if not serve.gpus else ""))
    else:
        backend = choose_backend(serve, None)
        if backend != "vllm":
            raise RunConfigError("the adapter form is served by vLLM's LoRA support: serve.backend must be auto or "
                                 "vllm, with serve.gpus >= 1")
        with tempfile.TemporaryDirectory() as tmp:
            adapter = check_vllm_adapter(_download(files.adapter_uri, Path(tmp), run.tracking_uri))
        uris = [base_uri(run, files, upload_base), storage_uri(files.adapter_uri, serve.artifacts_destination)]
        manifest = render(**common, backend=backend, base_uri=uris[0], adapter_uri=uris[1], adapter=adapter)
        notes.append(f"adapter r={adapter.rank} (vLLM --max-lora-rank {adapter.max_lora_rank}, scale "
                     f"{adapter.scale:g}) on {uris[0]}; request it as model '{name}'")
    local = [u for u in uris if not u.startswith(SERVER_SCHEMES)]
    if local:
        notes.append(f"warning: {local[0]} is not a storage URI KServe reads ({', '.join(SERVER_SCHEMES)}): "
                     "register to an MLflow server whose artifacts live in S3")
    return manifest, notes

