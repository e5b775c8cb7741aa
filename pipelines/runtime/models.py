"""The model a run config names, resolved to something ``fora_core.ModelSource`` loads on this machine.

Besides ModelSource's own specs (a built-in offline model, a local folder, a hub id), a run config may name
an ``s3://bucket/prefix`` folder holding a transformers model: the way to give a Ray cluster, KFP pods and a
laptop the same private weights without a hub. It is downloaded once per machine into
``$FORA_S3_MODEL_CACHE/<hash of the listing>`` (default ``$FORA_CACHE/s3-models``; a changed object is a new
hash, so a new download) and written atomically (a half-finished download is never used).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from fora_core import ModelSource
from fora_core.model_source import default_cache_dir

from ..config.run_config import RunConfig
from . import storage


def resolve_model(spec: str) -> str:
    """``spec`` unchanged, or the local cache folder of an ``s3://`` model folder."""
    if not storage.is_uri(spec):
        return spec
    listing = sorted(storage.list_objects(spec))
    if not any(key == "config.json" for key, _, _ in listing):
        raise storage.StorageError(f"no transformers model under {spec} (config.json is missing)")
    digest = hashlib.sha256(json.dumps([spec, listing]).encode()).hexdigest()[:20]
    dest = Path(os.environ.get("FORA_S3_MODEL_CACHE") or default_cache_dir() / "s3-models") / digest
    if (dest / "config.json").exists():
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=dest.parent))
    try:
        storage.download_dir(spec, tmp)
        try:
            tmp.rename(dest)
        except OSError:  # another process finished the same download first
            if not (dest / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


def model_source(run: RunConfig) -> ModelSource:
    return ModelSource(resolve_model(run.model), dtype=run.dtype)
