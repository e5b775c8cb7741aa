"""``fora ablate`` on a tiny random model: the arms of each phase, a bad config in one line, and a real run
(real Ray Tune + Train, lm-eval, MLflow) that keeps selection apart from reporting (rows and seeds), gives every
method the same search budget, writes a report with every method's row, and resumes without re-running
finished phases."""

import json
import os
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from pipeline_fixtures import tiny_model_dir, write_records

from pipelines import cli
from pipelines.ablation.runner import best_per_method, count_trials, k_curve_arms, search_arms, seed_arms
from pipelines.config.run_config import RunConfig
from pipelines.data.jsonl import read_jsonl

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def _config(root: Path, model_dir: Path, **ablation) -> dict:
    records = write_records(root / "records.json", 64)
    general = root / "general.txt"
    general.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    return {"name": "tiny-ablation", "model": str(model_dir), "output_dir": str(root / "out"),
            "data": {"source": str(records), "max_train": 32, "max_validation": 8, "calibration_size": 8},
            "fora": {"rank": 4, "alpha": 8, "dropout": 0.0, "layer_budget": 2,
                     "fisher": {"num_batches": 4, "batch_size": 2}},
            "train": {"max_steps": 4, "batch_size": 4, "checkpoint_every": 2, "eval_every": 2, "warmup_steps": 0,
                      "cpus_per_worker": 0.4},
            "eval": {"tasks": ["arc_easy", "boolq"], "limit": 6, "batch_size": 4, "general_text": str(general),
                     "general_tokens": 64},
            "sweep": {"max_concurrent": 3},
            "ablation": {"methods": ["lora", "fora"], "lr": [1e-2, 2e-2], "stiefel_lr": [5e-2],
                         "trials_per_method": 3, "search_seed": 7, "seeds": [0, 1], "report_rows": 16,
                         "layer_budgets": [1, 2], "k_curve_seeds": 1, **ablation}}


def test_arms_of_every_phase():
    run = RunConfig.from_dict({"fora": {"layer_budget": 0.5},
                               "ablation": {"methods": ["fora", "fg-lora", "stiefel-lora", "lora"],
                                            "lr": [1e-4, 2e-4], "stiefel_lr": [0.1, 0.2, 0.4], "seeds": [0, 1, 2],
                                            "layer_budgets": [0.25, 0.5, 1.0], "search_seed": 9}})
    arms = search_arms(run, num_layers=8)
    # round 0: the AdamW grid for all, x the Stiefel grid for the Stiefel methods; K only for the Fisher methods
    assert len(arms) == 2 + 2 + 2 * 3 + 2 * 3
    assert {(a["method"], a["K"]) for a in arms} == {("fora", 4), ("fg-lora", 4), ("lora", 8), ("stiefel-lora", 8)}
    assert {a["seed"] for a in arms} == {9}  # the search's own seed, never a reported one
    assert {a["stiefel_lr"] for a in arms if a["method"] == "lora"} == {run.train.stiefel_lr}
    assert {a["stiefel_lr"] for a in arms if a["method"] == "fora"} == {0.1, 0.2, 0.4}
    results = [{**a, "status": "completed", "val_loss": a["lr"] + a["stiefel_lr"]} for a in arms]
    results.append({**arms[0], "lr": 1e-9, "status": "stopped_early", "val_loss": 0.0})  # not run to the end
    best = best_per_method(results)
    assert best["fora"]["lr"] == 1e-4 and best["fora"]["stiefel_lr"] == 0.1
    seeds = seed_arms(best, [0, 1, 2])
    assert len(seeds) == 12 and {a["seed"] for a in seeds} == {0, 1, 2}
    assert all(a["lr"] == 1e-4 for a in seeds)
    k_arms = k_curve_arms(run, best, num_layers=8)
    assert sorted((a["method"], a["K"], a["seed"]) for a in k_arms) == [
        (m, k, s) for m in ("fg-lora", "fora") for k in (2, 8) for s in (0, 1, 2)]
    # equal budgets: the largest initial design (6) plus 2 for every method
    assert count_trials(run, 8) == {"search": 4 * 8, "seeds": 12, "k_curves": 12}


@pytest.mark.parametrize("edit, message", [
    ({"methods": ["vera"]}, "'ablation.methods': 'vera'"),
    ({"seeds": []}, "'ablation.seeds': []"),
    ({"stiefel_lr": [0]}, "'ablation.stiefel_lr'"),
    ({"layer_budgets": [9]}, "'ablation.layer_budgets': 9 (allowed: 1..4 layers"),
    ({"max_trials": 5}, "the ablation has 11 trials (6 search, 4 seeds, 1 K curves) but 'ablation.max_trials' is 5"),
    ({"trials_per_method": 1}, "'ablation.trials_per_method': 1 (allowed: at least 2, the largest initial grid"),
])
def test_bad_ablation_config_is_one_line_and_starts_nothing(tmp_path, model_dir, capsys, edit, message):
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, model_dir, **edit)))
    assert cli.main(["ablate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out" / "ablation").exists()


def test_too_few_rows_for_selection_and_report_is_one_line(tmp_path, model_dir, capsys):
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, model_dir, report_rows=500)))
    assert cli.main(["ablate", str(path)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "data.max_validation (8) for selection plus ablation.report_rows (500) for the report" in last, last


@pytest.mark.integration
def test_real_ablation_report_and_resume(tmp_path, model_dir):
    from pipelines.ablation.runner import run_ablation

    run = RunConfig.from_dict(_config(tmp_path, model_dir))
    summary = run_ablation(run)
    root = run.out.resolve() / "ablation"
    assert summary["trials"] == {"search": 6, "seeds": 4, "k_curves": 1}
    assert len(summary["search"]) == 6 and len(summary["seeds"]) == 4 and len(summary["k_curves"]) == 1
    assert all(r["status"] == "completed" for r in summary["search"] + summary["seeds"] + summary["k_curves"])

    # selection apart from reporting: three disjoint sets of rows, and the search's seed never reported
    rows = {name: {tuple(r["input_ids"]) for r in read_jsonl(path)} for name, path in (
        ("train", root / "data" / "train.jsonl"), ("selection", root / "data" / "validation.jsonl"),
        ("report", root / "report_data" / "validation.jsonl"))}
    assert (len(rows["selection"]), len(rows["report"])) == (8, 16) == (summary["split"]["selection"],
                                                                        summary["split"]["report"])
    assert not rows["train"] & rows["selection"] and not rows["train"] & rows["report"]
    assert not rows["selection"] & rows["report"]
    assert {r["seed"] for r in summary["search"]} == {7} and {r["seed"] for r in summary["seeds"]} == {0, 1}
    # the report's numbers come from the report split: every scored adapter's held-out loss is over its 16 rows
    for r in summary["seeds"]:
        items = summary["seed_scores"][r["trial_id"]]["tuned"]["items"]["heldout/loss"]["heldout"]
        assert len(items) == 16, items

    # equal budgets: every method ran its 2-value initial grid, then one more trial in round 1
    for m in ("lora", "fora"):
        mine = [r for r in summary["search"] if r["method"] == m]
        assert len(mine) == 3 and sorted(r["round"] for r in mine) == [0, 0, 1]
        assert len({(r["lr"], r["stiefel_lr"]) for r in mine}) == 3
        seeds = [r for r in summary["seeds"] if r["method"] == m]
        assert sorted(r["seed"] for r in seeds) == [0, 1]
        assert all(r["lr"] == summary["best"][m]["lr"] for r in seeds)
        assert seeds[0]["val_loss"] != seeds[1]["val_loss"]  # the seed changes the run
    assert summary["k_curves"][0]["method"] == "fora" and summary["k_curves"][0]["K"] == 1
    # the Stiefel factor's distance from its replayed init, for every fora trial (none for lora)
    fora_ids = {r["trial_id"] for r in summary["search"] + summary["seeds"] if r["method"] == "fora"}
    assert set(summary["stiefel_drift"]) == fora_ids and all(0 < v < 1.5 for v in summary["stiefel_drift"].values())

    for r in summary["seeds"]:
        s = summary["seed_scores"][r["trial_id"]]
        assert set(s["tuned"]["tasks"]) == {"arc_easy", "boolq"}
        assert {t: len(v) for t, v in s["tuned"]["items"]["acc_avg"].items()} == {"arc_easy": 6, "boolq": 6}
        metrics = s["tuned"]["metrics"]
        assert metrics["general/perplexity"] > 1 and metrics["kl_drift"] > 0
        assert 0 < metrics["effective_rank_ratio"] <= 1
    params = {m: summary["seed_scores"][next(r["trial_id"] for r in summary["seeds"] if r["method"] == m)]
              ["trainable_parameters"] for m in ("lora", "fora")}
    # tiny llama: q, k, v, up, down with r = 4; (d_in + d_out) = 64+64, 64+32, 64+32, 64+96, 96+64
    per_layer = 4 * (128 + 96 + 96 + 160 + 160)
    assert params == {"lora": 4 * per_layer, "fora": 2 * per_layer}

    report = (root / "report.md").read_text()
    for needle in ("| lora |", "| fora |", "## Reading", "Beside the paper", "fora - lora (FoRA against LoRA",
                   "16 report rows", "verdict here"):
        assert needle in report, needle
    table = json.loads((root / "report.json").read_text())["methods"]
    acc, lo, hi = table["fora"]["acc"]
    assert lo <= acc <= hi
    for name in ("search.png", "k_sensitivity.png", "methods.png", "spectra.png"):
        assert (root / name).stat().st_size > 1000, name

    client = MlflowClient(run.tracking_uri)
    parent = client.get_run(summary["parent_run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 11
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "ablation")} >= {
        "ablation/report.md", "ablation/methods.png", "ablation/ablation_summary.json"}

    again = run_ablation(run)  # resumes: every phase and score reused, no new trial
    assert [r["trial_id"] for r in again["seeds"]] == [r["trial_id"] for r in summary["seeds"]]
    # wall seconds are summed over invocations: the resumed one added almost nothing to any stage
    first, second = summary["seconds"], again["seconds"]
    assert (first["invocations"], second["invocations"]) == (1, 2)
    assert all(0 <= second[k] - first[k] < 5 for k in ("search", "seeds", "k_curves", "scoring"))
    assert abs(second["total"] - sum(second[k] for k in ("prepare", "search", "seeds", "k_curves", "scoring"))) < 1e-6
    assert len(client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")) == 11
