"""The ablation's scoring: every seed run's adapter (and the K curves') on the report split, the base model on
the same items, and how far each Stiefel factor moved; cached per trial under ``<ablation>/scores/``.

The report split (``report_data/``, ``splits.py``) is the evaluation's held-out source here: the perplexity
the report quotes is over rows that neither trained a model nor chose its setting.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from fora_core import STIEFEL_METHODS

from ..config.run_config import RunConfig
from ..runtime.models import model_source
from ..sweep.tune_runner import copy_trial_adapter

log = logging.getLogger("fora")


def adapter_parameters(adapter_dir: Path) -> int:
    """Trainable parameters of a saved adapter (``fora_core.persistence.trainable_parameters``)."""
    from fora_core.persistence import trainable_parameters

    return trainable_parameters(adapter_dir)


def score_trials(run: RunConfig, rows: list[dict], data: Path, root: Path, tasks: bool) -> dict[str, dict]:
    """Scores of every trial's adapter ({trial_id: eval results}); cached per trial under root/scores/."""
    from ..steps.evaluate import run_evaluation

    pending = [r for r in rows if not _scored(root / "scores" / r["trial_id"] / "eval_results.json")]
    model = tokenizer = None
    if pending:
        model, tokenizer = model_source(run).load()
    for i, r in enumerate(pending, 1):
        out = root / "scores" / r["trial_id"]
        t0 = time.perf_counter()
        adapter = copy_trial_adapter(r, out / "adapter")
        results = run_evaluation(model, tokenizer, adapter, data, _ablation_eval(run, tasks), out,
                                 max_length=run.data.max_length, compare_base=False, diagnostics=True)
        results["trainable_parameters"] = adapter_parameters(adapter)
        results["seconds"] = time.perf_counter() - t0
        (out / "eval_results.json").write_text(json.dumps(results, indent=1))
        shutil.rmtree(adapter)
        log.info("scored %d/%d: %s K=%s seed=%s in %.0f s", i, len(pending), r["method"], r["K"], r.get("seed"),
                 time.perf_counter() - t0)
    return {r["trial_id"]: json.loads((root / "scores" / r["trial_id"] / "eval_results.json").read_text())
            for r in rows}


def _scored(path: Path) -> bool:
    """Whether ``path`` holds scores of the current schema (an older one is scored again)."""
    from ..steps.evaluate import RESULTS_FORMAT

    return path.exists() and json.loads(path.read_text()).get("format") == RESULTS_FORMAT


def stiefel_drift_of_trials(run: RunConfig, rows: list[dict], root: Path) -> dict[str, float]:
    """How far the Stiefel factor moved from its init in each Stiefel trial ({trial_id: mean ||X - X0|| / ||X0||});
    cached in root/scores/stiefel_drift.json. Shows directly whether a Stiefel lr let B train at all."""
    from peft import PeftModel

    from fora_core.diagnostics import stiefel_factor_drift

    cache = root / "scores" / "stiefel_drift.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [r for r in rows if r["method"] in STIEFEL_METHODS and r["trial_id"] not in known
            and r.get("checkpoint_path")]
    if todo:
        model, _ = model_source(run).load()
        for r in todo:
            adapter = copy_trial_adapter(r, root / "scores" / "drift-adapter")
            fora = json.loads((adapter / "fora_config.json").read_text())["fora"]
            peft = PeftModel.from_pretrained(model, str(adapter))
            drift = stiefel_factor_drift(peft, fora["stiefel"]["factor"], fora["seed"])
            known[r["trial_id"]] = sum(drift) / len(drift)
            model = peft.unload()
            shutil.rmtree(adapter)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=1))
    return known


def _ablation_eval(run: RunConfig, tasks: bool):
    """The run's eval section as the ablation scores it: its tasks (or none), ``ablation.eval_limit``, the
    held-out loss on every row of the report split (``report_data/validation_text.jsonl``), no generation."""
    import dataclasses

    e = run.eval
    return dataclasses.replace(e, tasks=list(e.tasks) if tasks else [], limit=run.ablation.eval_limit or e.limit,
                               perplexity=True, heldout=dataclasses.replace(e.heldout, source="validation", metrics=[],
                                                                   limit=run.ablation.report_rows))


def score_base(run: RunConfig, data: Path, root: Path) -> dict:
    """The base model on the same items (seven tasks with per-item scores, in-domain perplexity)."""
    from ..steps.evaluate import run_evaluation

    out = root / "scores" / "base"
    if not _scored(out / "eval_results.json"):
        model, tokenizer = model_source(run).load()
        run_evaluation(model, tokenizer, None, data, _ablation_eval(run, True), out, max_length=run.data.max_length,
                       compare_base=True, diagnostics=False)
    return json.loads((out / "eval_results.json").read_text())["base"]
