"""Step 4, evaluate: the base model, the tuned model and the registry's champion, on the same items.

What is measured (``eval`` section, ``config/evaluation.py``; names in ``evaluation/metrics.py``):

* lm-eval tasks (``evaluation/lm_eval_suite.py``): the built-in commonsense tasks, lm-eval tasks by name,
  the user's own task YAMLs; every metric with per-item scores;
* the held-out data (``evaluation/heldout.py``): per-item response loss, and greedy answers scored by the
  user's scorers;
* the tuned model's diagnostics: general-text perplexity and KL drift from the base (forgetting), the
  adapters' effective rank and spectrum.

The base model's scores are cached by model and suite fingerprint (``evaluation/score_cache.py``); the
champion's are taken from its own run's ``item_scores.json`` when it was scored on the same suite.
Outputs: ``eval_results.json``, ``eval_table.md``, ``item_scores.json`` (per-item scores, answers and the
suite fingerprint, for the register step's paired test and the MLflow generations table).

One schema for a scored model, in both files: ``{"metrics": {name: value}, "items": {metric: {group: [score per
item]}}, "tasks": {task: {metric: value}}}`` (``item_scores.json`` adds ``generations``). The diagnostics are
metrics of that block (``evaluation/metrics.DIAGNOSTIC_METRICS``). ``eval_results.json`` carries
``"format": 3``; the per-model views of format 1-2 (``acc_avg``, ``perplexity``, ``general_perplexity``,
``kl_drift`` ... beside ``metrics``, items under ``tasks``), written before 2026-12-08, are read by nothing: the
ablation re-scores a cached trial of an older format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from fora_core.methods import METHOD_SPECS

from ..config.evaluation import EvalConfig, HeldoutConfig
from ..evaluation import score_cache
from ..evaluation.heldout import HeldoutItem, build_items, heldout_examples, items_fingerprint, score_heldout
from ..evaluation.lm_eval_suite import Suite, check_tasks, lm_eval_scores, prepare_suite, task_manager
from ..evaluation.metrics import DIAGNOSTIC_METRICS, higher_is_better
from ..runtime import atomic

log = logging.getLogger("fora")
ITEM_SCORES_FORMAT = 2
RESULTS_FORMAT = 3


@dataclass
class EvalPlan:
    """What every model is scored on: the same lm-eval suite and the same held-out items."""

    cfg: EvalConfig
    suite: Suite | None
    manager: object | None
    items: list[HeldoutItem]
    fingerprint: str
    base_fingerprint: str = ""
    """The base weights' fingerprint (``score_cache.model_fingerprint``)."""

    def describe(self) -> str:
        parts = [f"{len(self.suite.names)} lm-eval task(s)"] if self.suite else []
        if self.items:
            parts.append(f"{len(self.items)} held-out item(s)" + (f" answered and scored by {', '.join(self.cfg.heldout.metrics)}"
                                                                 if self.cfg.heldout.metrics else ""))
        return ", ".join(parts) or "nothing"


def plan_evaluation(cfg: EvalConfig, tokenizer, data_dir: str | Path, out: Path, max_length: int,
                    chat_template: str | None = None, system_prompt: str = "template") -> EvalPlan:
    """Prepare the suite (task files, the user's YAMLs, the held-out items) once, before any model is scored;
    a missing task, dataset or held-out file is an error here, before any work."""
    suite = manager = None
    if cfg.tasks:
        suite = prepare_suite(cfg.tasks, cfg.limit, out / "tasks", cfg.allow_task_code)
        manager = task_manager(suite)
        check_tasks(suite, manager)
    items: list[HeldoutItem] = []
    h: HeldoutConfig = cfg.heldout
    if h.on and (cfg.perplexity or h.metrics):
        examples, where = heldout_examples(h, data_dir)
        items, skipped = build_items(examples, tokenizer, h, max_length, chat_template, system_prompt)
        log.info("evaluate: %d held-out item(s) from %s%s", len(items), where,
                 f" ({skipped} longer than data.max_length={max_length}, left out)" if skipped else "")
    digest = hashlib.sha256()
    digest.update((suite.fingerprint(cfg.limit) if suite else "no tasks").encode())
    digest.update(((items_fingerprint(items, h) + str(cfg.perplexity)) if items else "no held-out").encode())
    return EvalPlan(cfg, suite, manager, items, digest.hexdigest()[:16])


def score_model(model, tokenizer, plan: EvalPlan, label: str = "") -> dict:
    """{"metrics", "items", "directions", "tasks", "generations"} of one model (``label``: base, tuned, champion
    vN, in the progress and the log) on the plan's suite."""
    model.eval()
    scored = {"metrics": {}, "items": {}, "directions": {}, "tasks": {}, "generations": []}
    if plan.suite is not None:
        lm = lm_eval_scores(model, tokenizer, plan.suite, plan.manager, plan.cfg.limit, plan.cfg.batch_size)
        for key in ("metrics", "items", "directions", "tasks"):
            scored[key].update(lm[key])
    if plan.items:
        held = score_heldout(model, tokenizer, plan.items, plan.cfg.heldout, plan.cfg.batch_size,
                             with_loss=plan.cfg.perplexity, label=label)
        scored["metrics"].update(held["metrics"])
        scored["items"].update(held["items"])
        scored["directions"].update({m: higher_is_better(m) for m in held["metrics"]})
        scored["generations"] = held["generations"]
    return scored


def model_block(scored: dict) -> dict:
    """A scored model as ``eval_results.json`` holds it: its metrics, per-item scores and per-task values."""
    return {key: dict(scored.get(key) or {}) for key in ("metrics", "items", "tasks")}


def diagnostic_metrics(diag: dict) -> dict[str, dict[str, float]]:
    """{"tuned": {...}, "base": {...}}: the values of ``DIAGNOSTIC_METRICS`` in the tuned model's diagnostics
    (the base model has a general-text perplexity only)."""
    adapters, general = diag["adapters"], diag.get("general_text")
    tuned = {"effective_rank_ratio": adapters.get("effective_rank_ratio", 0.0)}
    if "stiefel_factor_drift" in adapters:
        tuned["stiefel_factor_drift"] = adapters["stiefel_factor_drift"]
    base = {}
    if general is not None:
        tuned.update({"general/perplexity": general["tuned_perplexity"], "kl_drift": general["kl_drift"]})
        base["general/perplexity"] = general["base_perplexity"]
    assert set(tuned) <= set(DIAGNOSTIC_METRICS), tuned
    return {"tuned": tuned, "base": base}


def adapter_diagnostics_of(tuned, adapter_dir: Path, tokenizer, out: Path, general_text: str,
                           general_tokens: int) -> dict:
    """The tuned model's diagnostics: general-text perplexity of base and tuned and their KL drift
    (``evaluation/general_text.py``), effective rank and spectrum of the updates (``evaluation/adapter_report.py``)."""
    from ..evaluation.adapter_report import write_adapter_report
    from ..evaluation.general_text import general_text_metrics

    t0 = time.perf_counter()
    cfg = tuned.peft_config["default"]
    scaling = cfg.lora_alpha / (math.sqrt(cfg.r) if getattr(cfg, "use_rslora", False) else cfg.r)
    meta_file = adapter_dir / "fora_config.json"
    fora = json.loads(meta_file.read_text())["fora"] if meta_file.exists() else {}
    method = fora.get("method", "lora")
    spec = METHOD_SPECS.get(method)
    # the Stiefel factor's orthogonality is read off the saved adapter only where it is saved as trained:
    # fora-filet is saved as [B, -B0] (rank 2r, residual.py), whose columns are not orthonormal together
    constrained = fora.get("stiefel", {}).get("factor", "B") if spec and spec.stiefel and not spec.residual \
        else None
    # the ratio is to the method's rank r, not the saved rank: a residual method (pissa, filet) is saved as a
    # rank-2r LoRA [B, -B0] [A; A0], and dividing by 2r would halve its ratio against every other method's
    rank = int(fora.get("rank", cfg.r))
    diag: dict = {"adapters": write_adapter_report(tuned, scaling, rank, constrained, out,
                                                   title=f"{method}: adapter update spectra")}
    diag["adapters"]["saved_rank"] = cfg.r
    if constrained:  # how far the Stiefel factor moved from its (seeded, replayable) init
        from fora_core.diagnostics import stiefel_factor_drift

        drift = stiefel_factor_drift(tuned, constrained, int(fora.get("seed", 0)))
        diag["adapters"]["stiefel_factor_drift"] = sum(drift) / len(drift)
    general = general_text_metrics(tuned, tokenizer, general_text, general_tokens) if general_text else None
    if general is not None:
        diag["general_text"] = general
    diag["seconds"] = time.perf_counter() - t0
    return diag


def _base_scores(base_model, tokenizer, plan: EvalPlan, cache: str | None) -> dict:
    key = score_cache.cache_key(plan.base_fingerprint, plan.fingerprint, batch_size=plan.cfg.batch_size)
    hit = score_cache.load(cache, key)
    if hit is not None:
        log.info("evaluate: base model's scores on this suite from the cache (%s)", cache)
        return {**hit, "cached": True}
    scored = score_model(base_model, tokenizer, plan, "base")
    score_cache.save(cache, key, scored)
    return scored


def run_evaluation(base_model, tokenizer, adapter_dir: str | Path | None, data_dir: str | Path, cfg: EvalConfig,
                   out_dir: str | Path, *, max_length: int = 256, chat_template: str | None = None,
                   system_prompt: str = "template",
                   compare_base: bool | None = None, diagnostics: bool | None = None,
                   champion: dict | None = None, cache: str | None = None) -> dict:
    """Score base, tuned (with its diagnostics) and champion; writes ``eval_results.json``, ``eval_table.md``
    and ``item_scores.json`` in ``out_dir``.

    ``champion`` ({"version", "adapter_dir"} and optionally "logged": its run's item_scores.json): the
    registry's current champion, scored on the same items (or taken from its logged scores when they are
    on the same suite); its adapter goes on the same base weights. ``cache``: the score cache's location
    (None: no cache)."""
    from peft import PeftModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    compare_base = cfg.compare_base if compare_base is None else compare_base
    diagnostics = cfg.diagnostics if diagnostics is None else diagnostics
    plan = plan_evaluation(cfg, tokenizer, data_dir, out, max_length, chat_template, system_prompt)
    plan.base_fingerprint = score_cache.model_fingerprint(base_model)
    log.info("evaluate: %s (suite %s)", plan.describe(), plan.fingerprint)
    scored: dict[str, dict] = {}
    results: dict = {"format": RESULTS_FORMAT, "suite": plan.fingerprint}
    base_model.eval()
    if compare_base:
        scored["base"] = _base_scores(base_model, tokenizer, plan, cache)
        results["base"] = {**model_block(scored["base"]), "from_cache": bool(scored["base"].get("cached"))}
    if adapter_dir is not None:
        tuned = PeftModel.from_pretrained(base_model, str(adapter_dir))
        tuned.eval()
        scored["tuned"] = score_model(tuned, tokenizer, plan, "tuned")
        results["tuned"] = model_block(scored["tuned"])
        if diagnostics:
            diag = adapter_diagnostics_of(tuned, Path(adapter_dir), tokenizer, out, cfg.general_text, cfg.general_tokens)
            results["diagnostics"] = diag
            for who, values in diagnostic_metrics(diag).items():
                if who in results:
                    results[who]["metrics"].update(values)
        tuned.unload()
    if champion is not None:
        scored["champion"] = _champion_scores(base_model, tokenizer, plan, champion, plan.base_fingerprint)
        results["champion"] = {"version": int(champion["version"]), "source": scored["champion"]["source"],
                               **model_block(scored["champion"])}
    directions = {}
    for s in scored.values():
        directions.update(s.get("directions", {}))
    directions.update({name: higher_is_better(name) for name in DIAGNOSTIC_METRICS})
    results["directions"] = directions
    if "tuned" in scored:
        atomic.write_text(out / "item_scores.json", json.dumps(item_scores_document(plan, scored, champion)))
    atomic.write_text(out / "eval_results.json", json.dumps(results, indent=2))
    from .eval_table import results_table

    atomic.write_text(out / "eval_table.md", results_table(results))
    return results


def _champion_scores(base_model, tokenizer, plan: EvalPlan, champion: dict, base_fp: str) -> dict:
    """The champion's scores: from its own run's item_scores.json when that run scored it on this suite over
    the same base weights (nothing changed, so scoring again would give the same numbers), else scored here."""
    logged = champion.get("logged")
    if logged and logged.get("format") == ITEM_SCORES_FORMAT and logged.get("suite") == plan.fingerprint \
            and logged.get("base_model_fingerprint") == base_fp:
        log.info("evaluate: champion v%s's scores on this suite taken from its own run", champion["version"])
        return {**logged["tuned"], "tasks": logged["tuned"].get("tasks") or {},
                "source": "scored on this suite by its own run"}
    from peft import PeftModel

    held = PeftModel.from_pretrained(base_model, str(champion["adapter_dir"]))
    held.eval()
    scored = score_model(held, tokenizer, plan, "champion")
    held.unload()
    return {**scored, "source": "scored in this run"}


def item_scores_document(plan: EvalPlan, scored: dict[str, dict], champion: dict | None) -> dict:
    """``item_scores.json``: per model its metrics, per-item scores and answers, on one suite."""
    doc: dict = {"format": ITEM_SCORES_FORMAT, "suite": plan.fingerprint, "directions": {},
                 "base_model_fingerprint": plan.base_fingerprint}
    for who, s in scored.items():
        doc["directions"].update(s.get("directions", {}))
        doc[who] = {k: s.get(k) for k in ("metrics", "items", "tasks", "generations")}
    if champion is not None and "champion" in doc:
        doc["champion"].update(version=int(champion["version"]), source=scored["champion"]["source"])
    if plan.items:
        doc["heldout"] = {"questions": [it.question for it in plan.items],
                          "references": [it.reference for it in plan.items]}
    return doc
