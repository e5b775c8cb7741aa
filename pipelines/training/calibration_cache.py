"""The Fisher pass is a function of the weights, the calibration split and the ``fora`` settings: when none of
them changed since an earlier run (a scheduled night on the same data and base model), its files are copied back
instead of computed again.

The key is sha256 over the weights' fingerprint (``evaluation/score_cache.model_fingerprint``), the prepared
data's content hash (``data_card.json``, which covers the calibration split), the whole ``fora`` section (method,
K, targets, Fisher settings, seed) and whether FILet's energies are wanted. An entry is a folder
``<cache>/fisher/<key>/`` with ``fisher_report.json``, ``fisher_profile.png`` and, for FILet, the energies, under
the same location as the evaluation's score cache (``eval.cache``: '' = ``<storage.uri>/eval-cache``, else
``$FORA_EVAL_CACHE``, else ``$FORA_CACHE/eval-scores``; ``off`` = none). An entry without its report is a miss;
a failure to write one is logged, never raised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

from ..evaluation.score_cache import cache_location, model_fingerprint
from ..runtime import storage
from ..runtime.atomic import replace_dir
from .calibration_artifacts import FILET_FILE, PROFILE_FILE, REPORT_FILE

log = logging.getLogger("fora")

FILES = (REPORT_FILE, PROFILE_FILE, FILET_FILE)


def location(eval_cache: str, storage_uri: str) -> str | None:
    base = cache_location(eval_cache, storage_uri)
    return None if base is None else storage.join(base, "fisher")


def key(model, data_hash: str, fora: dict, filet: bool) -> str:
    text = json.dumps([model_fingerprint(model), data_hash, fora, filet], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def restore(where: str | None, entry: str, out: Path) -> bool:
    """Copy the entry's files into ``out``; False (nothing copied) when there is no whole entry."""
    if where is None:
        return False
    folder = storage.join(where, entry)
    try:
        report = storage.join(folder, REPORT_FILE)
        if not (storage.exists(report) if storage.is_uri(folder) else Path(report).is_file()):
            return False
        with tempfile.TemporaryDirectory(prefix="fora-fisher-") as tmp:
            local = Path(storage.localize(folder, Path(tmp) / "entry"))
            for name in FILES:
                if (local / name).exists():
                    shutil.copyfile(local / name, out / name)
        return True
    except Exception as err:  # an unreadable entry is a miss
        log.warning("Fisher cache: could not read %s (%s): computing the scores", folder, err)
        return False


def store(where: str | None, entry: str, out: Path) -> None:
    """Keep ``out``'s calibration files as the entry (whole or not at all)."""
    if where is None:
        return
    try:
        if not storage.is_uri(where):
            Path(where).mkdir(parents=True, exist_ok=True)
        # staged beside the entry (a local cache: the same filesystem, so the swap is one rename)
        with tempfile.TemporaryDirectory(prefix=".fora-fisher-", dir=None if storage.is_uri(where) else where) as tmp:
            staging = Path(tmp) / "entry"
            staging.mkdir()
            for name in FILES:
                if (out / name).exists():
                    shutil.copyfile(out / name, staging / name)
            target = storage.join(where, entry)
            if storage.is_uri(where):
                storage.upload_dir(staging, target)
            else:
                replace_dir(staging, Path(target))
    except Exception as err:
        log.warning("Fisher cache: could not write %s (%s)", where, err)
