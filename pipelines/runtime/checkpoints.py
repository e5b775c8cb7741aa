"""Checkpoint namespaces: every training run has its own, and a resume continues only the same run.

    <checkpoint_dir>/<name>/<run_key>-<fingerprint>/     one training run (Ray Train's storage_path and name)
        checkpoint_*/  adapter/  trainer_state.pt  history.json  fora_checkpoint.json

* ``run_key`` names the pipeline run: KFP's run id (a retried step of the same pipeline run has the same key,
  so it resumes where the failed attempt stopped), or ``local`` for ``fora run``/``fora train`` here.
* ``fingerprint`` is a hash of everything that decides what training produces: model, dtype, seed, the
  ``fora`` section, the training hyper-parameters, the data's content hash and the selected layers. Another
  config, other data or another layer set is another namespace, so a run can never continue, or return,
  the checkpoints of a different one.

Within a namespace (:func:`choose_namespace`): no checkpoint, start; an unfinished one, resume from it; a
finished one, reuse it only inside the same pipeline run (a retry after a later failure), and on this
machine (``local``) start a new numbered namespace instead, saying so. Each checkpoint carries
``fora_checkpoint.json`` (fingerprint, step, ``stopped_early``: an early stop finished the run before
``max_steps``); the training loop refuses to load one whose fingerprint differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.run_config import RunConfig
from . import storage

log = logging.getLogger("fora")

META_FILE = "fora_checkpoint.json"
LOCAL_RUN_KEY = "local"
# train fields that change what training produces (the rest: where and how often to save, retries, threads,
# activation checkpointing). The batch counts as one number, the global batch batch_size x grad_accum x
# num_workers: how it is split between workers and micro-batches does not change the gradient
# (training/batches.py), so a run resumes on another worker count that keeps the global batch.
# The checkpoint choice (train.choose_checkpoint, the patience, the evaluation points and rows, and the guards it
# applies) decides which adapter a run returns and where it stops, so it is part of the key too.
RESULT_TRAIN_FIELDS = ("max_steps", "lr", "stiefel_lr", "weight_decay", "warmup_steps", "use_gpu", "bf16",
                       "choose_checkpoint", "early_stopping_patience")
CHOICE_TRAIN_FIELDS = ("eval_every", "eval_rows")
"""Where the evaluation points are and what they score: part of the key when a choice or an early stop uses them."""


CHOICE_GUARD_METRICS = ("heldout/loss", "general/perplexity")
"""The guards measured in training (``training/checkpoint_choice.MEASURED``, a layer above this one)."""


def safe_key(run_key: str | None) -> str:
    """A run key usable as one path segment (KFP ids are UUIDs; anything else is cleaned)."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "-", (run_key or LOCAL_RUN_KEY).strip()).strip(".-")
    return key[:64] or LOCAL_RUN_KEY


def fingerprint(run: RunConfig, data_hash: str, layers: list[int]) -> str:
    """16 hex digits of sha256 over what decides the trained adapter."""
    d = run.to_dict()
    key = {"model": d["model"], "dtype": d["dtype"], "seed": d["seed"], "data_seed": d["data"]["seed"],
           "fora": d["fora"], "train": {k: d["train"][k] for k in RESULT_TRAIN_FIELDS},
           "global_batch": run.train.batch_size * run.train.grad_accum * run.train.num_workers,
           "packing": d["data"]["packing"], "quantization": d["quantization"],
           "data_hash": data_hash, "layers": sorted(int(x) for x in layers),
           "choice_guards": [g for g in d["register"]["guards"] if g["metric"] in CHOICE_GUARD_METRICS]}
    if run.train.choose_checkpoint != "last" or run.train.early_stopping_patience:
        key["choice_points"] = {k: d["train"][k] for k in CHOICE_TRAIN_FIELDS}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def meta(fp: str, step: int, max_steps: int, run_key: str) -> dict[str, Any]:
    return {"fingerprint": fp, "step": step, "max_steps": max_steps, "run_key": run_key}


def _read_meta_files(namespace: str) -> list[dict]:
    found = []
    if storage.is_uri(namespace):
        for rel in storage.list_keys(namespace):
            parts = rel.split("/")
            if len(parts) == 2 and parts[1] == META_FILE:
                data = json.loads(storage.read_text(storage.join(namespace, rel)))
                found.append({**data, "checkpoint": storage.join(namespace, parts[0])})
    elif Path(namespace).is_dir():
        for path in Path(namespace).glob(f"*/{META_FILE}"):
            found.append({**json.loads(path.read_text()), "checkpoint": str(path.parent)})
    return found


def latest(namespace: str) -> dict | None:
    """The newest checkpoint's metadata (with its ``checkpoint`` location) in a namespace, or None."""
    found = _read_meta_files(namespace)
    return max(found, key=lambda m: m.get("step", -1)) if found else None


@dataclass
class Namespace:
    root: str
    """<checkpoint_dir>/<name>: Ray Train's storage_path."""
    name: str
    """<run_key>-<fingerprint>[-N]: Ray Train's run name."""
    fingerprint: str
    run_key: str
    state: str
    """fresh, resume (an unfinished checkpoint here) or finished (reused inside the same pipeline run)."""
    latest: dict | None = None
    """The newest checkpoint's metadata (resume, finished), read once by :func:`choose_namespace`."""

    @property
    def path(self) -> str:
        return storage.join(self.root, self.name)


def choose_namespace(run: RunConfig, run_key: str | None, data_hash: str, layers: list[int]) -> Namespace:
    """Where this training run keeps its checkpoints (see the module docstring); logs the decision."""
    key = safe_key(run_key)
    fp = fingerprint(run, data_hash, layers)
    root = storage.join(run.checkpoint_dir, run.name)
    for n in range(1, 1000):
        name = f"{key}-{fp}" if n == 1 else f"{key}-{fp}-{n}"
        ns = Namespace(root, name, fp, key, "fresh")
        found = latest(ns.path)
        if found is None:
            log.info("checkpoints: %s (new)", ns.path)
            return ns
        if found.get("fingerprint") != fp:
            log.warning("checkpoints in %s belong to another run (fingerprint %s, expected %s): not resuming "
                        "from them", ns.path, found.get("fingerprint"), fp)
            continue
        ns.latest = found
        if int(found["step"]) < run.train.max_steps and not found.get("stopped_early"):
            ns.state = "resume"
            log.info("checkpoints: resuming %s from step %d of %d", ns.path, found["step"], run.train.max_steps)
            return ns
        if key != LOCAL_RUN_KEY:
            ns.state = "finished"
            log.info("checkpoints: training already finished in this pipeline run (%s); reusing its final "
                     "checkpoint", ns.path)
            return ns
        log.info("checkpoints: a finished run with the same config, data and layers is in %s; training "
                 "again in a new namespace", ns.path)
    raise RuntimeError(f"more than 999 finished runs under {root}")
