"""Run the compiled-to-be KFP pipeline on the local KFP runner (``fora run CONFIG --kfp``).

Each step runs as a subprocess of this Python (``SubprocessRunner(use_venv=False)``: it must not pip-install
anything, which works offline); artifacts land under ``<output_dir>/kfp/<pipeline>-<timestamp>/<task>/``.
The local runner has no caching and no retries; the cluster has both.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.overrides import split_overrides
from ..config.run_config import RunConfig, parse_run_config

log = logging.getLogger("fora")


def run_on_kfp_local(config_text: str, overrides: str = "", pipeline_root: str | Path | None = None,
                     scheduled: bool = False) -> dict:
    """Run the KFP components locally; returns {"run": RunConfig, "task", "outputs_root"}. ``scheduled``: as a
    recurring run would (an unchanged run may skip training)."""
    from kfp import local

    from .fora_pipeline import fora_pipeline

    run: RunConfig = parse_run_config(config_text, split_overrides(overrides))  # fail fast on a bad config
    root = Path(pipeline_root or run.out.resolve() / "kfp")
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    task = fora_pipeline(config_yaml=config_text, overrides=overrides, scheduled=scheduled)
    runs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("fora-pipeline-"))
    return {"run": run, "task": task, "outputs_root": str(runs[-1]) if runs else str(root)}
