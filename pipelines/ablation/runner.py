"""``fora ablate CONFIG``: lora, fg-lora, fora and the mechanism arms on the same data and step budget, each
tuned at an equal search budget, then re-run on other seeds and scored on rows the search never saw; writes
``<output_dir>/ablation/report.md``.

Selection is kept apart from reporting:

* **rows**: data prep holds out ``data.max_validation`` rows (the *selection* split: the search's final
  validation loss) and ``ablation.report_rows`` more (the *report* split, ``report_data/``): every number in the
  report is measured on the report split, never on the rows that picked the setting;
* **seeds**: every search trial runs on ``ablation.search_seed``; the report's runs use ``ablation.seeds``,
  which may not contain it.

Phases (each a Ray Tune run of the sweep's trial driver, resumable; data prep and the Fisher pass run once):

1. **search**, in rounds (``search_plan.py``): every method gets ``ablation.trials_per_method`` trials: its
   initial grid (``ablation.lr``, crossed with ``ablation.stiefel_lr`` for the Stiefel methods), then one
   trial per round that extends an edge or refines around the best; no early stopping, so every setting is
   judged at the same final step. The best setting of a method: the lowest final selection loss.
2. **seeds**: each method's best setting once per ``ablation.seeds``.
3. **K curves**: ``ablation.k_curve_methods`` at every ``ablation.layer_budgets`` K with their tuned learning
   rates, on every seed (the K of phase 2 is reused, not re-run).
4. **scoring** on the report split: the base model once, then every adapter of phase 2 (the seven tasks with
   per-item scores, report-split perplexity, general-text perplexity, KL drift, effective rank) and of
   phase 3 (perplexities only).

Everything lands in ``<output_dir>/ablation/`` (``ablation_summary.json``, ``report.md`` and its plots) and
in MLflow (a parent run with a child per trial).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from fora_core import FISHER_METHODS
from fora_core.config import resolve_layer_budget

from ..config.errors import RunConfigError
from ..config.run_config import RunConfig
from ..steps import stages
from ..sweep.driver import prepare_once
from ..sweep.trials import num_decoder_layers
from ..sweep.tune_runner import tune_trials
from .clock import StageClock
from .scoring import score_base, score_trials, stiefel_drift_of_trials
from .search_plan import initial_design, propose_round
from .splits import prep_config, split_report

log = logging.getLogger("fora")

PHASES = ("search", "seeds", "k_curves")


def _k_of(method: str, budget: int | float, num_layers: int) -> int:
    return resolve_layer_budget(budget, num_layers) if method in FISHER_METHODS else num_layers


def _with_k(run: RunConfig, arm: dict, num_layers: int, seed: int) -> dict[str, Any]:
    return {"method": arm["method"], "K": _k_of(arm["method"], run.fora.layer_budget, num_layers), "lr": arm["lr"],
            "stiefel_lr": arm["stiefel_lr"], "seed": seed}


def search_arms(run: RunConfig, num_layers: int) -> list[dict[str, Any]]:
    """Round 0 of the search: every method's initial design (ablation.lr, x ablation.stiefel_lr for the Stiefel
    methods, else train.stiefel_lr), on the search seed."""
    a = run.ablation
    return [_with_k(run, {"method": m, **p}, num_layers, a.search_seed) for m in a.methods
            for p in initial_design(m, a.lr, a.stiefel_lr, run.train.stiefel_lr)]


def next_search_arms(run: RunConfig, results: list[dict], num_layers: int, round_index: int) -> list[dict]:
    """The search's next round from the trials so far (``search_plan.propose_round``); [] when every method
    has spent ``ablation.trials_per_method``."""
    tried: dict[str, list[dict]] = {m: [r for r in results if r["method"] == m] for m in run.ablation.methods}
    return [_with_k(run, arm, num_layers, run.ablation.search_seed)
            for arm in propose_round(tried, run.ablation.budget(), run.ablation.step, round_index)]


def seed_arms(best: dict[str, dict], seeds: list[int]) -> list[dict[str, Any]]:
    """Phase 2: every method's best setting once per seed."""
    return [{**_setting(best[m]), "seed": s} for m in best for s in seeds]


def k_curve_methods(run: RunConfig) -> list[str]:
    """The methods whose K curves are drawn: ablation.k_curve_methods that are ablated and select layers."""
    return [m for m in run.ablation.k_curve_methods if m in run.ablation.methods and m in FISHER_METHODS]


def k_curve_seeds(run: RunConfig) -> list[int]:
    """The seeds of the K curves: the first ``ablation.k_curve_seeds`` of ``ablation.seeds`` (0: all)."""
    return run.ablation.seeds[: run.ablation.k_curve_seeds or None]


def k_curve_arms(run: RunConfig, best: dict[str, dict], num_layers: int) -> list[dict[str, Any]]:
    """Phase 3: the K-curve methods at each K of ablation.layer_budgets except the one phase 2 ran, on the
    K-curve seeds."""
    arms = []
    ks = sorted({resolve_layer_budget(b, num_layers) for b in run.ablation.layer_budgets})
    for m in (m for m in k_curve_methods(run) if m in best):
        for k in ks:
            if k != best[m]["K"]:
                arms += [{**_setting(best[m]), "K": k, "seed": s} for s in k_curve_seeds(run)]
    return arms


def _setting(row: dict) -> dict[str, Any]:
    return {k: row[k] for k in ("method", "K", "lr", "stiefel_lr")}


def count_trials(run: RunConfig, num_layers: int) -> dict[str, int]:
    """Trials per phase, known before anything runs."""
    a = run.ablation
    n_search = a.budget() * len(a.methods)
    n_seeds = len(a.methods) * len(a.seeds)
    k = resolve_layer_budget(run.fora.layer_budget, num_layers)
    ks = {resolve_layer_budget(b, num_layers) for b in a.layer_budgets} - {k}
    n_k = len(ks) * len(k_curve_methods(run)) * len(k_curve_seeds(run))
    return {"search": n_search, "seeds": n_seeds, "k_curves": n_k}


def plan(run: RunConfig) -> tuple[int, dict[str, int]]:
    """Check the ablation before any work: (L, trials per phase)."""
    num_layers = num_decoder_layers(run)
    for b in run.ablation.layer_budgets + [run.fora.layer_budget]:
        try:
            resolve_layer_budget(b, num_layers)
        except Exception:
            raise RunConfigError(f"invalid value for 'ablation.layer_budgets': {b!r} (allowed: 1..{num_layers} "
                                 f"layers, this model has {num_layers}, or a fraction in (0, 1])") from None
    a = run.ablation
    largest = max(len(search_arms_of(run, m)) for m in a.methods)
    if a.trials_per_method and a.trials_per_method < largest:
        raise RunConfigError(f"invalid value for 'ablation.trials_per_method': {a.trials_per_method} (allowed: at "
                             f"least {largest}, the largest initial grid; every method gets the same budget)")
    counts = count_trials(run, num_layers)
    total = sum(counts.values())
    if total > run.ablation.max_trials:
        raise RunConfigError(f"the ablation has {total} trials ({counts['search']} search, {counts['seeds']} "
                             f"seeds, {counts['k_curves']} K curves) but 'ablation.max_trials' is "
                             f"{run.ablation.max_trials}: raise the budget or shrink the grids")
    return num_layers, counts


def search_arms_of(run: RunConfig, method: str) -> list[dict]:
    a = run.ablation
    return initial_design(method, a.lr, a.stiefel_lr, run.train.stiefel_lr)


def best_per_method(results: list[dict]) -> dict[str, dict]:
    """The search's best setting per method: the lowest final selection loss among completed trials."""
    best: dict[str, dict] = {}
    for r in results:
        if r["status"] != "completed" or r.get("val_loss") is None:
            continue
        if r["method"] not in best or r["val_loss"] < best[r["method"]]["val_loss"]:
            best[r["method"]] = r
    return best


def phase_config(run: RunConfig, n_trials: int) -> RunConfig:
    """The run config for one phase of explicit trials: every trial runs to its last step (FIFO, never stopped
    early, so final losses compare), and the trial budget is the phase's size."""
    return RunConfig.from_dict({**run.to_dict(), "sweep": {**run.to_dict()["sweep"], "scheduler": "fifo",
                                                          "max_trials": max(1, n_trials)}})


def _phase(run: RunConfig, root: Path, name: str, arms: list[dict], data: Path, calib: Path,
           parent: str) -> dict:
    """One phase's trials (skipped when its summary says it finished: a re-run resumes where it stopped)."""
    folder = root / name
    done = folder / "phase_summary.json"
    if done.exists():
        summary = json.loads(done.read_text())
        if summary.get("finished"):
            log.info("ablation phase %s: finished earlier, reusing %s", name, folder)
            return summary
    log.info("ablation phase %s: %d trials", name, len(arms))
    summary = tune_trials(phase_config(run, len(arms)), data, calib, folder, parent, arms=arms)
    done.write_text(json.dumps(summary, indent=1, default=str))
    if not summary["finished"]:
        raise RuntimeError(f"ablation phase {name}: {summary['failed_trials']} trial(s) failed; see {folder} and "
                           "re-run the same command to resume")
    return summary


def _search(run: RunConfig, root: Path, num_layers: int, data: Path, calib: Path, parent: str) -> list[dict]:
    """Phase 1 in rounds (``search_plan.py``): round 0 the initial grids, then one trial per method per round
    until every method has spent ``ablation.trials_per_method``. Returns every search trial, with its round."""
    results: list[dict] = []
    arms = search_arms(run, num_layers)
    for i in range(run.ablation.budget() + 1):
        if not arms:
            break
        for r in _phase(run, root, f"search-{i}", arms, data, calib, parent)["results"]:
            results.append({**r, "round": i})
        arms = next_search_arms(run, results, num_layers, i + 1)
    return results


def run_ablation(run: RunConfig, command: str | None = None) -> dict:
    """The whole ablation; returns its summary (also ``ablation/ablation_summary.json``) and writes the report."""
    from ..preflight.checks import check_data
    from ..runtime.reachability import check_services
    from .report import write_report

    t_start = time.perf_counter()
    num_layers, counts = plan(run)
    check_data(run)
    check_services(run)  # Ray, the bucket, MLflow: before any folder or MLflow run
    root = run.out.resolve() / "ablation"
    root.mkdir(parents=True, exist_ok=True)
    state_file = root / "parent_run_id.txt"
    parent = state_file.read_text().strip() if state_file.exists() else \
        stages.start_tracking(run, f"{run.name} ablation")
    state_file.write_text(parent)
    log.info("ablation: %s on %d layers; %d search + %d seed + %d K-curve trials", ", ".join(run.ablation.methods),
             num_layers, counts["search"], counts["seeds"], counts["k_curves"])
    clock = StageClock(root / "timings.json")
    with clock("prepare"):
        _, computed = prepare_once(prep_config(run), root, parent)
        if computed and (root / "report_data").exists():
            shutil.rmtree(root / "report_data")  # new data: the old report split is stale
        split = split_report(run, root / "data", root / "report_data")
    data, calib, report_data = root / "data", root / "calibration", root / "report_data"
    log.info("ablation: %d selection rows (the search's validation loss), %d report rows (every reported number); "
             "search seed %d, reported seeds %s", split["selection"], split["report"], run.ablation.search_seed,
             run.ablation.seeds)

    with clock("search"):
        search = _search(run, root, num_layers, data, calib, parent)
    best = best_per_method(search)
    missing = [m for m in run.ablation.methods if m not in best]
    if missing:
        raise RuntimeError(f"ablation: no completed search trial for {', '.join(missing)}")
    with clock("seeds"):
        seeds = _phase(run, root, "seeds", seed_arms(best, run.ablation.seeds), data, calib, parent)
    k_arms = k_curve_arms(run, best, num_layers)
    with clock("k_curves"):
        k_curves = _phase(run, root, "k_curves", k_arms, data, calib, parent) if k_arms else {"results": []}

    # a diverged trial left no model: it is named in the summary, never scored as if its last checkpoint were one
    diverged = [r for r in search + seeds["results"] + k_curves["results"] if r["status"] == "diverged"]
    seeds["results"] = [r for r in seeds["results"] if r["status"] != "diverged"]
    k_curves["results"] = [r for r in k_curves["results"] if r["status"] != "diverged"]
    with clock("scoring"):
        base = score_base(run, report_data, root)
        seed_scores = score_trials(run, seeds["results"], report_data, root, tasks=True)
        drift = stiefel_drift_of_trials(run, [r for r in search if r["status"] != "diverged"]
                                        + seeds["results"], root)
        k_scores = score_trials(run, k_curves["results"], report_data, root, tasks=False)
    seconds = clock.totals()
    this_run = time.perf_counter() - t_start
    summary = {"parent_run_id": parent, "num_layers": num_layers, "trials": counts, "seconds": seconds,
               "best": {m: _setting(r) for m, r in best.items()},
               "search": search, "seeds": seeds["results"], "k_curves": k_curves["results"],
               "split": split, "search_budget": run.ablation.budget(),
               "diverged": [_setting(r) | {"trial_id": r["trial_id"], "steps": r.get("steps")} for r in diverged],
               "base": base, "seed_scores": seed_scores, "k_scores": k_scores, "stiefel_drift": drift,
               "config": run.to_dict(), "command": command or "fora ablate CONFIG"}
    (root / "ablation_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    outputs = write_report(summary, root)
    with stages.tracked(run, parent):
        import mlflow

        for path in outputs + [root / "ablation_summary.json"]:
            mlflow.log_artifact(str(path), "ablation")
        mlflow.log_metrics({f"ablation/seconds_{k}": v for k, v in seconds.items()})
    log.info("ablation done: %.1f min in this invocation, %.1f min in all (%d invocation(s)): %s", this_run / 60,
             seconds["total"] / 60, seconds["invocations"], root / "report.md")
    return summary
