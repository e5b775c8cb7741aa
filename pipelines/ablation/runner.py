"""``fora ablate CONFIG``: lora, fg-lora, stiefel-lora and fora on the same data and step budget, each
tuned fairly, then re-run with several seeds and scored; writes ``<output_dir>/ablation/report.md``.

Phases (each one a Ray Tune run of the sweep's trial driver, resumable like a sweep; data prep and the
Fisher pass run once for all of them):

1. **search**: every method over its own learning-rate grid: ``ablation.lr`` (AdamW), crossed with
   ``ablation.stiefel_lr`` (Cayley-Adam) for the Stiefel methods; K = ``fora.layer_budget``; no early
   stopping, so every setting is judged at the same final step. The best setting of each method is the
   one with the lowest final validation loss.
2. **seeds**: each method's best setting once per ``ablation.seeds`` (seed: adapter init, dropout, data order).
3. **K curves**: fora and fg-lora at every ``ablation.layer_budgets`` K with their tuned learning rates
   (first seed; the K of phase 2 is reused, not re-run).
4. **scoring**: the base model once, then every adapter of phase 2 (the seven tasks with per-item scores,
   in-domain and general-text perplexity, KL drift, effective rank) and of phase 3 (perplexities only).

Everything lands in ``<output_dir>/ablation/`` (``ablation_summary.json``, ``report.md`` and its plots) and
in MLflow (a parent run with a child per trial).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from fora_core import FISHER_METHODS, STIEFEL_METHODS
from fora_core.config import resolve_layer_budget

from ..config.errors import RunConfigError
from ..config.run_config import RunConfig
from ..runtime import storage
from ..runtime.models import model_source
from ..steps import stages
from ..sweep.driver import prepare_once
from ..sweep.trials import num_decoder_layers
from ..sweep.tune_runner import tune_trials

log = logging.getLogger("fora")

PHASES = ("search", "seeds", "k_curves")


def _k_of(method: str, budget: int | float, num_layers: int) -> int:
    return resolve_layer_budget(budget, num_layers) if method in FISHER_METHODS else num_layers


def search_arms(run: RunConfig, num_layers: int) -> list[dict[str, Any]]:
    """Phase 1: per method, ablation.lr x (ablation.stiefel_lr for Stiefel methods, else train.stiefel_lr)."""
    a = run.ablation
    arms = []
    for m in a.methods:
        for lr in a.lr:
            for slr in (a.stiefel_lr if m in STIEFEL_METHODS else [run.train.stiefel_lr]):
                arms.append({"method": m, "K": _k_of(m, run.fora.layer_budget, num_layers), "lr": lr,
                             "stiefel_lr": slr})
    return arms


def seed_arms(best: dict[str, dict], seeds: list[int]) -> list[dict[str, Any]]:
    """Phase 2: every method's best setting once per seed."""
    return [{**_setting(best[m]), "seed": s} for m in best for s in seeds]


def k_curve_arms(run: RunConfig, best: dict[str, dict], num_layers: int) -> list[dict[str, Any]]:
    """Phase 3: fora and fg-lora at each K of ablation.layer_budgets except the one phase 2 ran."""
    arms = []
    for m in (m for m in best if m in FISHER_METHODS):
        ks = sorted({resolve_layer_budget(b, num_layers) for b in run.ablation.layer_budgets})
        for k in ks:
            if k != best[m]["K"]:
                arms.append({**_setting(best[m]), "K": k, "seed": run.ablation.seeds[0]})
    return arms


def _setting(row: dict) -> dict[str, Any]:
    return {k: row[k] for k in ("method", "K", "lr", "stiefel_lr")}


def count_trials(run: RunConfig, num_layers: int) -> dict[str, int]:
    """Trials per phase, known before anything runs."""
    a = run.ablation
    n_search = len(search_arms(run, num_layers))
    n_seeds = len(a.methods) * len(a.seeds)
    k = resolve_layer_budget(run.fora.layer_budget, num_layers)
    ks = {resolve_layer_budget(b, num_layers) for b in a.layer_budgets} - {k}
    n_k = len(ks) * sum(m in FISHER_METHODS for m in a.methods)
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
    counts = count_trials(run, num_layers)
    total = sum(counts.values())
    if total > run.ablation.max_trials:
        raise RunConfigError(f"the ablation has {total} trials ({counts['search']} search, {counts['seeds']} "
                             f"seeds, {counts['k_curves']} K curves) but 'ablation.max_trials' is "
                             f"{run.ablation.max_trials}: raise the budget or shrink the grids")
    return num_layers, counts


def best_per_method(results: list[dict]) -> dict[str, dict]:
    """The search's best setting per method: the lowest final validation loss among completed trials."""
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


def _adapter_of(row: dict, dest: Path) -> Path:
    """The trial's final adapter, copied next to its scores."""
    if dest.exists():
        shutil.rmtree(dest)
    source = storage.join(str(row["checkpoint_path"]), "adapter")
    if storage.is_uri(source):
        storage.download_dir(source, dest)
    else:
        shutil.copytree(source, dest)
    return dest


def adapter_parameters(adapter_dir: Path) -> int:
    """Trainable parameters of a saved adapter (``fora_core.persistence.trainable_parameters``)."""
    from fora_core.persistence import trainable_parameters

    return trainable_parameters(adapter_dir)


def score_trials(run: RunConfig, rows: list[dict], data: Path, root: Path, tasks: bool) -> dict[str, dict]:
    """Scores of every trial's adapter ({trial_id: eval results}); cached per trial under root/scores/."""
    from ..steps.evaluate import run_evaluation

    pending = [r for r in rows if not (root / "scores" / r["trial_id"] / "eval_results.json").exists()]
    model = tokenizer = None
    if pending:
        model, tokenizer = model_source(run).load()
    for i, r in enumerate(pending, 1):
        out = root / "scores" / r["trial_id"]
        t0 = time.perf_counter()
        adapter = _adapter_of(r, out / "adapter")
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
            adapter = _adapter_of(r, root / "scores" / "drift-adapter")
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
    held-out loss on the validation split without generation."""
    import dataclasses

    e = run.eval
    return dataclasses.replace(e, tasks=list(e.tasks) if tasks else [], limit=run.ablation.eval_limit or e.limit,
                               perplexity=True, heldout=dataclasses.replace(e.heldout, source="validation", metrics=[]))


def score_base(run: RunConfig, data: Path, root: Path) -> dict:
    """The base model on the same items (seven tasks with per-item scores, in-domain perplexity)."""
    from ..steps.evaluate import run_evaluation

    out = root / "scores" / "base"
    if not (out / "eval_results.json").exists():
        model, tokenizer = model_source(run).load()
        run_evaluation(model, tokenizer, None, data, _ablation_eval(run, True), out, max_length=run.data.max_length,
                       compare_base=True, diagnostics=False)
    return json.loads((out / "eval_results.json").read_text())["base"]


class StageClock:
    """Wall seconds per stage, summed over every invocation of one ablation (a resumed run keeps counting) and
    saved to ``path`` after each stage: ``with clock("search"): ...``; ``clock.totals()`` adds "total" and
    "invocations"."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
        self.seconds["invocations"] = self.seconds.get("invocations", 0) + 1
        self._save()

    def _save(self) -> None:
        self.path.write_text(json.dumps(self.seconds, indent=1))

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t
            self._save()

    def totals(self) -> dict[str, float]:
        stages = {k: v for k, v in self.seconds.items() if k not in ("invocations", "total")}
        return {**stages, "total": sum(stages.values()), "invocations": self.seconds["invocations"]}


def run_ablation(run: RunConfig, command: str | None = None) -> dict:
    """The whole ablation; returns its summary (also ``ablation/ablation_summary.json``) and writes the report."""
    from ..runtime.reachability import check_services
    from ..steps.preflight import check_data
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
        prepare_once(run, root, parent)
    data, calib = root / "data", root / "calibration"

    with clock("search"):
        search = _phase(run, root, "search", search_arms(run, num_layers), data, calib, parent)
    best = best_per_method(search["results"])
    missing = [m for m in run.ablation.methods if m not in best]
    if missing:
        raise RuntimeError(f"ablation: no completed search trial for {', '.join(missing)}")
    with clock("seeds"):
        seeds = _phase(run, root, "seeds", seed_arms(best, run.ablation.seeds), data, calib, parent)
    k_arms = k_curve_arms(run, best, num_layers)
    with clock("k_curves"):
        k_curves = _phase(run, root, "k_curves", k_arms, data, calib, parent) if k_arms else {"results": []}

    # a diverged trial left no model: it is named in the summary, never scored as if its last checkpoint were one
    diverged = [r for r in search["results"] + seeds["results"] + k_curves["results"] if r["status"] == "diverged"]
    seeds["results"] = [r for r in seeds["results"] if r["status"] != "diverged"]
    k_curves["results"] = [r for r in k_curves["results"] if r["status"] != "diverged"]
    with clock("scoring"):
        base = score_base(run, data, root)
        seed_scores = score_trials(run, seeds["results"], data, root, tasks=True)
        drift = stiefel_drift_of_trials(run, [r for r in search["results"] if r["status"] != "diverged"]
                                        + seeds["results"], root)
        k_scores = score_trials(run, k_curves["results"], data, root, tasks=False)
    seconds = clock.totals()
    this_run = time.perf_counter() - t_start
    summary = {"parent_run_id": parent, "num_layers": num_layers, "trials": counts, "seconds": seconds,
               "best": {m: _setting(r) for m, r in best.items()},
               "search": search["results"], "seeds": seeds["results"], "k_curves": k_curves["results"],
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
