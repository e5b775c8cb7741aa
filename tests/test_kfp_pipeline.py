"""The KFP v2 pipeline: the checked-in YAML is fresh, the DAG is wired and sized for a cluster, components
run through ``.python_func``, and the whole DAG runs on the real local KFP runner (real Ray, MLflow, lm-eval)."""

import json
import os
from pathlib import Path

import pytest
import yaml
from kfp.dsl import Dataset, Markdown
from mlflow.tracking import MlflowClient
from pipeline_fixtures import tiny_model_dir, write_records

from components import BASE_IMAGE
from pipelines.fora_pipeline import PIPELINE_YAML, compile_pipeline

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
STEPS = ["data-prep", "calibrate", "train", "evaluate", "register"]


def _spec(path: Path) -> dict:
    return next(yaml.safe_load_all(path.read_text()))


def _platform(path: Path) -> dict:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 2
    return docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_checked_in_pipeline_yaml_is_fresh(tmp_path):
    fresh = compile_pipeline(tmp_path / "fresh.yaml").read_text()
    assert PIPELINE_YAML.read_text() == fresh, "pipelines/fora_pipeline.yaml is stale: run `fora compile`"
    assert len(list(yaml.safe_load_all(fresh))) == 2  # pipeline spec + platform spec, header comment included
    from kfp import components

    loaded = components.load_component_from_file(str(PIPELINE_YAML))  # KFP's own parser accepts it
    assert loaded.name == "fora-pipeline"


def test_checked_in_sweep_pipeline_is_fresh_and_wired(tmp_path):
    from pipelines.fora_sweep_pipeline import SWEEP_PIPELINE_YAML, compile_sweep_pipeline

    fresh = compile_sweep_pipeline(tmp_path / "sweep.yaml").read_text()
    assert SWEEP_PIPELINE_YAML.read_text() == fresh, "pipelines/fora_sweep_pipeline.yaml is stale: `fora compile`"
    tasks = _spec(SWEEP_PIPELINE_YAML)["root"]["dag"]["tasks"]
    assert sorted(tasks) == ["calibrate", "data-prep", "evaluate", "register", "sweep"]
    # the Fisher pass runs once, before the trials; the best trial flows into evaluate and register
    assert set(tasks["sweep"]["dependentTasks"]) == {"data-prep", "calibrate"}
    reg = tasks["register"]["inputs"]
    assert reg["parameters"]["registry_tags"]["taskOutputParameter"] == {"outputParameterKey": "registry_tags",
                                                                         "producerTask": "sweep"}
    assert reg["parameters"]["config_yaml"]["taskOutputParameter"]["outputParameterKey"] == "best_config_yaml"
    assert reg["artifacts"]["adapter"]["taskOutputArtifact"]["producerTask"] == "sweep"


def test_dag_wiring_resources_caching_and_image():
    spec = _spec(PIPELINE_YAML)
    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(STEPS)
    deps = {name: set(t.get("dependentTasks", [])) for name, t in tasks.items()}
    assert deps["data-prep"] == set()
    assert deps["calibrate"] == {"data-prep"}
    assert deps["train"] == {"data-prep", "calibrate"}
    assert deps["evaluate"] == {"data-prep", "train"}
    assert deps["register"] == {"data-prep", "calibrate", "train", "evaluate"}
    caching = {name: t.get("cachingOptions", {}).get("enableCache", False) for name, t in tasks.items()}
    assert caching == {"data-prep": True, "calibrate": True, "train": False, "evaluate": False,
                       "register": False}
    assert tasks["train"]["retryPolicy"]["maxRetryCount"] == 2
    # artifacts flow between steps as typed KFP artifacts
    train_inputs = tasks["train"]["inputs"]["artifacts"]
    assert train_inputs["calibration"]["taskOutputArtifact"] == {"outputArtifactKey": "calibration",
                                                                 "producerTask": "calibrate"}
    executors = spec["deploymentSpec"]["executors"]
    for name, ex in executors.items():
        container = ex["container"]
        assert container["image"] == BASE_IMAGE, name
        assert "pip install" not in " ".join(container["command"]), f"{name} would pip-install at run time"
        assert float(container["resources"]["cpuRequest"]) >= 2
        assert container["resources"]["memoryRequest"] >= 8  # GB
    platform = _platform(PIPELINE_YAML)
    for name in executors:
        secrets = {s["secretName"]: s for s in platform[name]["secretAsEnv"]}
        # R9/R3: S3 and MLflow credentials are required (a missing Secret stops the pod before it starts);
        # the Ray token only matters with a Ray cluster
        assert secrets["fora-s3-credentials"]["optional"] is False
        assert secrets["fora-mlflow-credentials"]["optional"] is False
        assert secrets["fora-ray-token"]["optional"] is True
        assert platform[name]["securityContext"] == {"runAsUser": "1000", "runAsGroup": "1000",
                                                     "runAsNonRoot": True}
        assert int(platform[name]["activeDeadlineSeconds"]) > 0  # R6: no step hangs forever
    assert platform["exec-train"]["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    outputs = spec["components"]["comp-calibrate"]["outputDefinitions"]["artifacts"]
    assert outputs["fisher_profile"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert outputs["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    # the UI shows the cluster config as the default and accepts overrides
    params = spec["root"]["inputDefinitions"]["parameters"]
    default = yaml.safe_load(params["config_yaml"]["defaultValue"])
    assert default["register"]["tracking_uri"].startswith("http")
    assert default["storage"]["uri"].startswith("s3://")  # checkpoints and Ray-job inputs on shared storage
    assert params["overrides"]["defaultValue"] == ""


def test_resources_come_from_the_compiling_config(tmp_path):
    """An 8B-on-GPU config puts calibrate, train, evaluate and register on GPU nodes; data prep stays on CPU."""
    from pipelines.run_config import load_run_config

    run = load_run_config(Path("configs/cluster-8b-gpu.yaml"))
    spec = _spec(compile_pipeline(tmp_path / "gpu.yaml", run=run))
    executors = spec["deploymentSpec"]["executors"]
    platform = _platform(tmp_path / "gpu.yaml")
    for step in ("calibrate", "train", "evaluate", "register"):
        res = executors[f"exec-{step}"]["container"]["resources"]
        want = run.resources.of(step)
        assert res["accelerator"]["resourceCount"] == str(want.gpus), step
        assert res["accelerator"]["resourceType"] == want.accelerator
        assert res["memoryLimit"] == res["memoryRequest"] and res["cpuLimit"] == res["cpuRequest"]
        assert platform[f"exec-{step}"]["nodeSelector"]["labels"] == want.node_selector
        assert {t["key"] for t in platform[f"exec-{step}"]["tolerations"]} == {t["key"] for t in want.tolerations}
        assert int(platform[f"exec-{step}"]["activeDeadlineSeconds"]) == want.timeout_s
    assert "accelerator" not in executors["exec-data-prep"]["container"]["resources"]
    assert "nodeSelector" not in platform["exec-data-prep"]
    # the CLI's shortcut still works
    from pipelines import cli

    assert cli.main(["compile", "--output-dir", str(tmp_path / "cli"), "--train-gpus", "2"]) == 0
    res = _spec(tmp_path / "cli" / "fora_pipeline.yaml")["deploymentSpec"]["executors"]["exec-train"]
    assert res["container"]["resources"]["accelerator"]["resourceCount"] == "2"


def _tiny_config(root: Path, model_dir: Path) -> dict:
    records = write_records(root / "records.json", 40)
    return {"name": "tiny", "model": str(model_dir), "output_dir": str(root / "out"),
            "data": {"source": str(records), "max_train": 32, "max_validation": 4, "calibration_size": 8},
            "fora": {"rank": 4, "alpha": 8, "dropout": 0.0, "fisher": {"num_batches": 4, "batch_size": 2}},
            "train": {"max_steps": 4, "batch_size": 4, "checkpoint_every": 2, "eval_every": 2},
            "eval": {"tasks": ["arc_easy", "boolq"], "limit": 4, "batch_size": 4},
            "register": {"model_name": "tiny-kfp"}}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def test_data_prep_component_python_func(tmp_path, model_dir):
    from components.data_prep.component import data_prep

    cfg = _tiny_config(tmp_path, model_dir)
    data = Dataset(name="data", uri=str(tmp_path / "data"), metadata={})
    card = Markdown(name="card", uri=str(tmp_path / "card.md"), metadata={})
    run_id = data_prep.python_func(config_yaml=yaml.safe_dump(cfg), overrides="data.max_train=16",
                                   pipeline_run="unit", data=data, data_card=card)
    assert len((tmp_path / "data" / "train.jsonl").read_text().splitlines()) == 16
    assert data.metadata["train"] == 16 and data.metadata["content_hash"].startswith("sha256:")
    assert "| train |" in (tmp_path / "card.md").read_text()
    run = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}").get_run(run_id)
    assert run.info.run_name == "tiny (unit)" and run.data.metrics["data/train"] == 16


def test_component_user_error_is_one_line(tmp_path, model_dir, capsys):
    from components.data_prep.component import data_prep

    cfg = _tiny_config(tmp_path, model_dir)
    cfg["fora"]["method"] = "dora"
    with pytest.raises(SystemExit) as exit_info:
        data_prep.python_func(config_yaml=yaml.safe_dump(cfg), overrides="", pipeline_run="unit",
                              data=Dataset(name="d", uri=str(tmp_path / "d"), metadata={}),
                              data_card=Markdown(name="c", uri=str(tmp_path / "c"), metadata={}))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fora.method" in err[0] and "dora" in err[0]


@pytest.mark.integration
def test_whole_dag_on_the_local_kfp_runner(tmp_path, model_dir):
    from pipelines.kfp_local import run_on_kfp_local

    cfg = _tiny_config(tmp_path, model_dir)
    result = run_on_kfp_local(yaml.safe_dump(cfg), overrides="train.eval_every=4")
    root = Path(result["outputs_root"])
    expect = ["data-prep/data/train.jsonl", "data-prep/data/data_card.json", "data-prep/data_card",
              "calibrate/calibration/fisher_report.json", "calibrate/calibration/fisher_profile.png",
              "calibrate/fisher_profile", "train/adapter/adapter_model.safetensors",
              "train/adapter/adapter_config.json", "train/loss_curve", "evaluate/evaluation/eval_results.json",
              "evaluate/table", "register/merged/config.json", "register/registration"]
    for rel in expect:
        assert (root / rel).exists(), rel
    assert "data:image/png;base64," in (root / "calibrate" / "fisher_profile").read_text()
    assert "data:image/png;base64," in (root / "train" / "loss_curve").read_text()
    layers = json.loads((root / "calibrate/calibration/fisher_report.json").read_text())["selected_layers"]
    assert len(layers) == 2  # half of the tiny model's 4 layers
    calib_out = json.loads((root / "calibrate" / "executor_output.json").read_text())
    assert json.loads(calib_out["parameterValues"]["Output"]) == layers
    assert calib_out["artifacts"]["metrics"]["artifacts"][0]["metadata"]["layers_selected"] == 2
    eval_out = json.loads((root / "evaluate" / "executor_output.json").read_text())
    assert {"base_acc_avg", "tuned_acc_avg", "tuned_perplexity"} <= set(
        eval_out["artifacts"]["scores"]["artifacts"][0]["metadata"])

    client = MlflowClient(result["run"].tracking_uri)
    version = client.get_model_version("tiny-kfp", "1")
    assert version.tags["K"] == "2" and json.loads(version.tags["selected_layers"]) == layers
    assert str(client.get_model_version_by_alias("tiny-kfp", "champion").version) == "1"
    run = client.get_run(version.run_id)
    # every step logged into the one MLflow run that data prep opened
    assert {"data/train", "train/loss", "tuned/acc_avg", "base/acc_avg", "acc_avg"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 4
    assert run.data.params["selected_layers"] == json.dumps(layers)
    assert run.data.params["train.eval_every"] == "4"  # the override reached the steps
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"data", "calibration", "eval", "adapter"}
