"""The five steps end to end on a tiny random Llama: real Ray Train, real MLflow (SQLite), real lm-eval;
plus resume after an interruption and one-line errors for bad input with no partial registration."""

import json
import os
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from pipeline_fixtures import tiny_model_dir, write_records
from safetensors.torch import load_file

from pipelines import cli
from pipelines.config.run_config import RunConfig
from pipelines.steps.local_run import run_pipeline

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def make_run(root: Path, model_dir: Path, use_ray: bool, **train) -> RunConfig:
    root.mkdir(parents=True, exist_ok=True)
    records = write_records(root / "records.json", 40)
    return RunConfig.from_dict({
        "name": "tiny", "model": str(model_dir), "output_dir": str(root / "out"),
        "data": {"source": str(records), "max_train": 32, "max_validation": 4, "calibration_size": 8},
        "fora": {"rank": 4, "alpha": 8, "dropout": 0.0, "fisher": {"num_batches": 4, "batch_size": 2}},
        "train": {"max_steps": 6, "batch_size": 4, "checkpoint_every": 2, "eval_every": 3, "use_ray": use_ray,
                  "max_failures": 1, **train},
        "eval": {"tasks": ["arc_easy", "boolq"], "limit": 4, "batch_size": 4, "general_text": str(general_text(root)),
                 "general_tokens": 96},
        "register": {"model_name": "tiny-fora"},
    })


def general_text(root: Path) -> Path:
    path = root / "general.txt"
    path.write_text("A plain English paragraph about rivers, hills and the weather in spring. " * 30)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def test_whole_pipeline_with_ray_mlflow_and_lm_eval(tmp_path, model_dir):
    run = make_run(tmp_path, model_dir, use_ray=True)
    summary = run_pipeline(run, progress=False)
    out = run.out.resolve()
    for rel in ("data/train.jsonl", "data/validation.jsonl", "data/calibration.jsonl", "data/data_card.json",
                "calibration/fisher_report.json", "calibration/fisher_profile.png",
                "train/adapter/adapter_model.safetensors", "train/adapter/fora_config.json",
                "eval/eval_results.json", "eval/eval_table.md", "merged/config.json", "summary.json"):
        assert (out / rel).exists(), rel
    assert len(summary["selected_layers"]) == 2
    assert set(summary["results"]) == {"format", "base", "tuned", "diagnostics", "suite", "directions"}  # no champion
    # one schema per scored model; the diagnostics are metrics of it (evaluation/metrics.DIAGNOSTIC_METRICS)
    assert set(summary["results"]["tuned"]) == {"metrics", "items", "tasks"} and summary["results"]["format"] == 3
    assert {"general/perplexity", "kl_drift", "effective_rank_ratio"} <= set(summary["results"]["tuned"]["metrics"])
    client = MlflowClient(run.tracking_uri)
    version = client.get_model_version("tiny-fora", "1")
    assert version.tags["method"] == "fora" and version.tags["K"] == "2"
    assert version.tags["data_hash"].startswith("sha256:")
    assert str(client.get_model_version_by_alias("tiny-fora", "champion").version) == "1"
    mlrun = client.get_run(summary["run_id"])
    assert "tuned/acc_avg" in mlrun.data.metrics
    # the decision is on the run as well as on the version
    assert mlrun.data.tags["fora.decision"] == "promote" and mlrun.data.tags["fora.decision_version"] == "tiny-fora v1"
    assert mlrun.data.tags["fora.decision_reason"] == "no champion yet"
    # the diagnostics of every run: forgetting on the general text, KL drift, effective rank, the spectrum plot
    m = mlrun.data.metrics
    for key in ("base/general/perplexity", "tuned/general/perplexity", "tuned/kl_drift", "tuned/effective_rank_ratio",
                "diagnostics/effective_rank_ratio/q_proj", "diagnostics/effective_rank_ratio/down_proj"):
        assert key in m, key
    assert m["tuned/kl_drift"] > 0 and m["tuned/general/perplexity"] != m["base/general/perplexity"]
    assert 0 < m["tuned/effective_rank_ratio"] <= 1
    assert {a.path for a in client.list_artifacts(summary["run_id"], "eval")} >= {
        "eval/adapter_spectrum.png", "eval/adapter_diagnostics.json"}
    diag = json.loads((out / "eval" / "adapter_diagnostics.json").read_text())
    assert len(diag["adapters"]) == 2 * 5  # K = 2 layers x 5 target modules
    assert "general-text perplexity" in (out / "eval" / "eval_table.md").read_text()
    assert len(client.get_metric_history(summary["run_id"], "train/loss")) == 6
    # the registered model loads and generates through MLflow's pyfunc interface
    model = mlflow.pyfunc.load_model("models:/tiny-fora@champion")
    assert isinstance(model.predict(["Question: 1 plus 1?\nAnswer:"], params={"max_new_tokens": 2})[0], str)

    # a second run scores the champion (v1) on the same items, registers version 2 and keeps the champion:
    # the same config and seed give the same adapter, and a model never beats itself in a paired test
    summary2 = run_pipeline(run, progress=False)
    reg2 = summary2["registration"]
    assert reg2["version"] == 2 and reg2["action"] == "keep" and reg2["previous"] == 1
    champ = summary2["results"]["champion"]
    assert champ["version"] == 1
    assert champ["items"] == summary["results"]["tuned"]["items"]  # v1's scores here == v1 scored in run 1
    # nothing changed (base weights, suite): v1's scores come from its own run instead of a second scoring
    assert champ["source"] == "scored on this suite by its own run"
    assert "champion v1 scored on this suite by its own run" in reg2["reason"] and "does not win" in reg2["reason"]
    # the first night's outputs moved to a folder of their own; its weights are the registered version's
    nights = list((run.out / "nights").iterdir())
    assert len(nights) == 1 and (nights[0] / "train" / "adapter" / "adapter_model.safetensors").exists()
    assert (nights[0] / "eval" / "eval_results.json").exists() and not (nights[0] / "merged" / "config.json").exists()
    assert (nights[0] / "merged" / "model_uri.txt").read_text().strip() == "models:/tiny-fora/1"
    assert str(client.get_model_version_by_alias("tiny-fora", "champion").version) == "1"
    decision = json.loads(client.get_model_version("tiny-fora", "2").tags["champion_decision"])
    assert decision["previous"] == 1 and decision["test"]["diff"] == pytest.approx(
        summary2["results"]["tuned"]["metrics"]["acc_avg"] - champ["metrics"]["acc_avg"])
    history = json.loads(client.get_registered_model("tiny-fora").tags["promotion.000002"])
    assert history["version"] == 2 and history["action"] == "keep"
    # the register step retried (its pod died after registering): the same version, no second decision
    from pipelines.steps import stages

    out = run.out
    again = stages.register(run, out / "data", out / "calibration", out / "train" / "adapter", out / "eval",
                            out / "merged", summary2["run_id"])
    assert again["version"] == 2 and again["retried"] and again["action"] == "keep"
    assert len(client.search_model_versions("name = 'tiny-fora'")) == 2
    assert "promotion.000003" not in client.get_registered_model("tiny-fora").tags


def _adapter(path: str) -> dict:
    return load_file(str(Path(path) / "adapter_model.safetensors"))


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"fora": {"method": "vera"}}, "invalid value for 'fora.method'"),
        ({"fora": {"layer_budget": 9}}, "invalid value for 'fora.layer_budget': 9 (allowed: 1..4 layers"),
        ({"fora": {"target_modules": ["qkv_proj"]}}, "target module 'qkv_proj' not found"),
        ({"data": {"source": "EMPTY"}}, "the file is empty"),
        ({"data": {"source": "MALFORMED"}}, "bad.json row 1: field 'output' is missing"),
        ({"model": "no-such-org/no-such-model"}, "could not load model 'no-such-org/no-such-model'"),
    ],
)
def test_bad_input_is_one_line_and_registers_nothing(tmp_path, model_dir, capsys, edit, match):
    import yaml

    base = make_run(tmp_path, model_dir, use_ray=False).to_dict()
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "bad.json").write_text('[{"instruction": "x"}]')
    for section, value in edit.items():
        if isinstance(value, dict):
            for k, v in value.items():
                if v in ("EMPTY", "MALFORMED"):
                    v = str(tmp_path / ("empty.json" if v == "EMPTY" else "bad.json"))
                base[section][k] = v
        else:
            base[section] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base))
    code = cli.main(["run", str(path), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("fora: error: ") and match in err[-1], err[-1]
    db = Path(base["output_dir"]) / "mlflow.db"
    if db.exists():
        client = MlflowClient(f"sqlite:///{db.resolve()}")
        assert client.search_registered_models() == []
