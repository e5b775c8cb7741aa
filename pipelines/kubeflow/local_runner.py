"""Run the compiled-to-be KFP pipeline on the local KFP runner (``fora run CONFIG --kfp``).

Each step runs as a subprocess of this Python (``SubprocessRunner(use_venv=False)``: it must not pip-install
anything, which works offline); artifacts land under ``<output_dir>/kfp/<pipeline>-<timestamp>/<task>/``.
The local runner has no caching and no retries; the cluster has both.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config.form import RUN_FORM, form_defaults, resolve_form
from ..config.overrides import split_overrides
from ..config.run_config import RunConfig, parse_run_config

log = logging.getLogger("fora")


def run_on_kfp_local(config_text: str, overrides: str = "", pipeline_root: str | Path | None = None,
                     scheduled: bool = False, params: dict[str, Any] | None = None) -> dict:
    """Run the KFP components locally; returns {"run": RunConfig (the effective one), "task", "outputs_root"}.
    ``scheduled``: as a recurring run would (an unchanged run may skip training). ``params``: typed form
    parameters (``pipelines/config/form.py``), as a user sets them in the UI; the pipeline is compiled from
    ``config_text`` (as ``fora submit`` does), so its typed defaults are that config's values."""
    from kfp import local

    from .fora_pipeline import make_pipeline

    compiled = parse_run_config(config_text)  # fail fast on a bad config
    run: RunConfig = resolve_form(config_text, split_overrides(overrides), params or {},
                                  form_defaults(compiled, RUN_FORM), RUN_FORM)[0]
    root = Path(pipeline_root or run.out.resolve() / "kfp")
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    task = make_pipeline(compiled)(config_yaml=config_text, overrides=overrides, scheduled=scheduled,
                                   **(params or {}))
    runs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("fora-pipeline-"))
    return {"run": run, "task": task, "outputs_root": str(runs[-1]) if runs else str(root)}
