"""The evaluate step's results in MLflow: every metric per model (``base/<metric>``, ``tuned/<metric>``,
``champion/<metric>``), the diagnostics, the result files, and the held-out answers of base, champion and
tuned side by side as an MLflow table (``eval/generations.json``, shown in the run's Artifacts and
Evaluation views)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def generations_table(item_scores: dict) -> dict[str, list] | None:
    """{"question", "reference", "base", "champion vN", "tuned"} columns, or None when nothing was generated."""
    held = item_scores.get("heldout")
    tuned = (item_scores.get("tuned") or {}).get("generations")
    if not held or not tuned:
        return None
    table = {"question": held["questions"], "reference": held["references"]}
    for who in ("base", "champion", "tuned"):
        answers = (item_scores.get(who) or {}).get("generations")
        if answers and len(answers) == len(tuned):
            label = f"champion v{item_scores[who]['version']}" if who == "champion" else who
            table[label] = answers
    return table


def log_evaluation(results: dict, out: Path) -> None:
    """Scores and diagnostics of ``run_evaluation`` into the active MLflow run."""
    import mlflow

    for who in ("base", "tuned", "champion"):
        r = results.get(who)
        if r is None:
            continue
        values = {f"{who}/{name}": v for name, v in r.get("metrics", {}).items()}  # the diagnostics among them
        mlflow.log_metrics({k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)})
    if "champion" in results:
        mlflow.log_param("eval_champion_version", results["champion"]["version"])
    diag = results.get("diagnostics", {})
    for t, v in diag.get("adapters", {}).get("by_type", {}).items():
        mlflow.log_metric(f"diagnostics/effective_rank_ratio/{t}", v["effective_rank_ratio"])
    if "seconds" in diag:
        mlflow.log_metric("diagnostics/seconds", diag["seconds"])
    for name in ("eval_results.json", "eval_table.md", "item_scores.json", "adapter_diagnostics.json",
                 "adapter_spectrum.png"):
        if (out / name).exists():
            mlflow.log_artifact(str(out / name), "eval")
    if (out / "item_scores.json").exists():
        table = generations_table(json.loads((out / "item_scores.json").read_text()))
        if table is not None:
            mlflow.log_table(data=table, artifact_file="eval/generations.json")
