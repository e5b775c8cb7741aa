"""Scores that repeat themselves are kept: the base model's scores on an eval suite are computed once and
reused by every later run that evaluates the same weights on the same suite.

The key is sha256 over

    model fingerprint   every parameter's name, shape, sum and 16 strided values (one cheap pass over the
                        weights: the same checkpoint loaded anywhere, in the same dtype, gives the same key;
                        another checkpoint, dtype or revision gives another)
    suite fingerprint   the lm-eval tasks' items, the held-out items and their scorers, the limits, lm-eval's
                        version (``lm_eval_suite.Suite.fingerprint``, ``heldout.items_fingerprint``)
    settings            the batch size (padding can move a log-likelihood in the last digit)

The entry is one JSON file under ``eval.cache`` ('' = ``<storage.uri>/eval-cache``, else
``$FORA_EVAL_CACHE``, else ``$FORA_CACHE/eval-scores``; ``off`` = no cache), written atomically; a corrupt or unreadable entry is a
miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from fora_core.model_source import default_cache_dir

from ..runtime import atomic, storage

log = logging.getLogger("fora")


def cache_location(setting: str, storage_uri: str) -> str | None:
    """Where entries live for ``eval.cache`` (None: off)."""
    if setting == "off":
        return None
    if setting:
        return setting
    if storage_uri:
        return storage.join(storage_uri, "eval-cache")
    return os.environ.get("FORA_EVAL_CACHE") or str(default_cache_dir() / "eval-scores")


@torch.no_grad()
def model_fingerprint(model) -> str:
    """The weights' identity (module docstring), 16 hex digits."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 16)][:16].double().cpu().tolist()
        h.update(json.dumps([name, list(p.shape), str(p.dtype), float(flat.double().sum()), sample]).encode())
    return h.hexdigest()[:16]


SCORES_VERSION = 1
"""Bumped whenever a change to the scoring code changes what a score means: old entries are then misses."""


def cache_key(model_fp: str, suite_fp: str, **settings) -> str:
    return hashlib.sha256(json.dumps([SCORES_VERSION, model_fp, suite_fp, settings], sort_keys=True).encode()
                          ).hexdigest()[:24]


def load(location: str | None, key: str) -> dict | None:
    if location is None:
        return None
    path = storage.join(location, f"{key}.json") if storage.is_uri(location) else Path(location) / f"{key}.json"
    try:
        text = storage.read_text(str(path)) if storage.is_uri(location) else Path(path).read_text()
        return json.loads(text)
    except Exception:  # a miss: absent, unreadable or half-written by an older version
        return None


def save(location: str | None, key: str, entry: dict) -> None:
    if location is None:
        return
    text = json.dumps(entry)
    try:
        if storage.is_uri(location):
            storage.write_text(storage.join(location, f"{key}.json"), text)
        else:
            Path(location).mkdir(parents=True, exist_ok=True)
            atomic.write_text(Path(location) / f"{key}.json", text)
    except Exception as err:  # the cache is an optimisation: a failure to write it is logged, not raised
        log.warning("eval cache: could not write %s (%s)", location, err)
