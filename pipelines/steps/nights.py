"""Each night's outputs in their own folder: a run in an ``output_dir`` where an earlier run finished moves that
run's outputs under ``nights/`` before it writes its own.

    runs/chat/                    this run: data/ calibration/ train/ eval/ merged/ summary.json
    runs/chat/nights/2026-12-07T0210-3f9c1a2b/    the run before: the same folders, but merged/ holds only its
                                                  model card and fora_prompt.json (the weights are the registered
                                                  version's artifact in MLflow: ``model_uri.txt`` names it)

A run that did not finish (no ``summary.json``) is not moved: re-running the same command redoes its steps and
resumes its training from the last checkpoint. ``checkpoints/``, ``mlflow.db`` and ``mlartifacts/`` stay where
they are (shared by every night).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

log = logging.getLogger("fora")

NIGHT_FOLDERS = ("data", "calibration", "train", "eval", "merged", "summary.json")
KEPT_FROM_MERGED = ("README.md", "fora_prompt.json", "fora_base.json")
NIGHTS_DIR = "nights"


def archive_previous_night(out: Path, model_name: str) -> Path | None:
    """Move the last finished run's outputs in ``out`` to ``out/nights/<finished>-<run id>/``; the folder, or
    None when there was none."""
    summary_file = out / "summary.json"
    if not summary_file.is_file():
        return None
    try:
        summary = json.loads(summary_file.read_text())
    except json.JSONDecodeError:
        summary = {}
    finished = time.strftime("%Y-%m-%dT%H%M%S", time.gmtime(summary_file.stat().st_mtime))
    night = out / NIGHTS_DIR / f"{finished}-{str(summary.get('run_id', 'run'))[:8]}"
    night.mkdir(parents=True, exist_ok=True)
    for name in NIGHT_FOLDERS:
        if (out / name).exists():
            if name == "merged":
                _keep_card_only(out / name, night / name, summary, model_name)
            else:
                shutil.move(str(out / name), str(night / name))
    log.info("the previous run's outputs are in %s (this run writes its own in %s)", night, out)
    return night


def _keep_card_only(merged: Path, target: Path, summary: dict, model_name: str) -> None:
    """The merged folder without its weights: the card, the prompt format, and where the registered copy is."""
    target.mkdir(parents=True, exist_ok=True)
    for name in KEPT_FROM_MERGED:
        if (merged / name).exists():
            shutil.copy2(merged / name, target / name)
    reg = summary.get("registration") or {}
    if reg.get("version") is not None:
        (target / "model_uri.txt").write_text(f"models:/{model_name}/{reg['version']}\n")
    shutil.rmtree(merged)
