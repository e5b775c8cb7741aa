"""The KFP v2 pipeline: the checked-in YAML is fresh, the DAG is wired and sized for a cluster, components
run through ``.python_func``, and the whole DAG runs on the real local KFP runner (real Ray, MLflow, lm-eval)."""

import inspect
import json
import os
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from kfp.dsl import Dataset, Markdown, Output
from mlflow.tracking import MlflowClient
from pipeline_fixtures import tiny_model_dir, write_records

from components import BASE_IMAGE
from pipelines.config.form import RUN_FORM, form_defaults
from pipelines.config.run_config import load_run_config
from pipelines.kubeflow.fora_pipeline import DEFAULT_CONFIG_PATH, PIPELINE_YAML, compile_pipeline

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
STEPS = ["resolve", "data-prep", "calibrate", "train", "evaluate", "register", "deploy"]


def _spec(path: Path) -> dict:
    return next(yaml.safe_load_all(path.read_text()))


def _tasks(spec: dict) -> dict:
    """Every step task, the root DAG's and those inside its dsl.If sub-DAG (control-flow nodes left out)."""
    tasks = {k: v for k, v in spec["root"]["dag"]["tasks"].items() if not k.startswith("condition-")}
    for name, comp in spec["components"].items():
        if name.startswith("comp-condition-"):
            tasks.update(comp["dag"]["tasks"])
    return tasks


def _platform(path: Path) -> dict:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 2
    return docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_checked_in_pipeline_yaml_is_fresh(tmp_path):
    fresh = compile_pipeline(tmp_path / "fresh.yaml").read_text()
    assert PIPELINE_YAML.read_text() == fresh, "pipelines/kubeflow/fora_pipeline.yaml is stale: run `fora compile --output-dir pipelines/kubeflow`"
    assert len(list(yaml.safe_load_all(fresh))) == 2  # pipeline spec + platform spec, header comment included
    from kfp import components

    loaded = components.load_component_from_file(str(PIPELINE_YAML))  # KFP's own parser accepts it
    assert loaded.name == "fora-pipeline"


def test_checked_in_sweep_pipeline_is_fresh_and_wired(tmp_path):
    from pipelines.kubeflow.fora_sweep_pipeline import SWEEP_PIPELINE_YAML, compile_sweep_pipeline

    fresh = compile_sweep_pipeline(tmp_path / "sweep.yaml").read_text()
    assert SWEEP_PIPELINE_YAML.read_text() == fresh, "pipelines/kubeflow/fora_sweep_pipeline.yaml is stale: `fora compile --output-dir pipelines/kubeflow`"
    tasks = _tasks(_spec(SWEEP_PIPELINE_YAML))
    assert sorted(tasks) == ["calibrate", "data-prep", "deploy", "evaluate", "register", "resolve", "sweep"]
    # the Fisher pass runs once, before the trials; the best trial flows into evaluate and register
    assert set(tasks["sweep"]["dependentTasks"]) == {"data-prep", "calibrate", "resolve"}
    reg = tasks["register"]["inputs"]
    assert reg["parameters"]["registry_tags"]["taskOutputParameter"] == {"outputParameterKey": "registry_tags",
                                                                         "producerTask": "sweep"}
    assert reg["parameters"]["config_yaml"]["taskOutputParameter"]["outputParameterKey"] == "best_config_yaml"
    assert reg["artifacts"]["adapter"]["taskOutputArtifact"]["producerTask"] == "sweep"


@pytest.mark.parametrize("name", ["fora_pipeline", "fora_sweep_pipeline"])
def test_every_component_input_and_output_has_its_docstrings_description(name):
    """KFP copies a component's ``Args:`` (inputs) and ``Returns:`` (outputs) into the spec; the UI shows them."""
    spec = _spec(Path(PIPELINE_YAML).with_name(f"{name}.yaml"))
    missing = [f"{comp}: {key}" for comp, c in spec["components"].items() if not comp.startswith("comp-condition-")
               for side in ("inputDefinitions", "outputDefinitions") for kind in ("parameters", "artifacts")
               for key, value in c.get(side, {}).get(kind, {}).items() if not value.get("description")]
    assert missing == []


def test_the_resolve_components_inputs_are_the_forms_fields():
    """The form (``pipelines/config/form.py``) is the one list: the resolve component's inputs are written from it."""
    from components.resolve.component import FIXED, component_source, form_fields, resolve
    from pipelines.config.form import FORMS, FormField

    inputs = resolve.component_spec.inputs
    every = {f.name: f for fields in FORMS.values() for f in fields}
    assert list(inputs) == [name for name, _, _ in FIXED] + list(every)
    kfp_type = {"str": "String", "int": "Integer", "float": "Float", "bool": "Boolean", "list": "List"}
    for f in every.values():
        assert inputs[f.name].type == kfp_type[f.annotation.__name__], f.name
        assert f.help in inputs[f.name].description and f.path in inputs[f.name].description
    # a field added to a form becomes an input of the generated function, with its type
    extra = FormField("warmup_steps", "train.warmup_steps", "int", "Linear warm-up steps.")
    namespace: dict = {}
    exec(component_source([*form_fields(), extra]), {"NamedTuple": NamedTuple, "Output": Output, "Markdown": Markdown},
         namespace)
    assert inspect.signature(namespace["resolve"]).parameters["warmup_steps"].annotation is int


def test_dag_wiring_resources_caching_and_image():
    spec = _spec(PIPELINE_YAML)
    tasks = _tasks(spec)
    assert sorted(tasks) == sorted(STEPS)
    deps = {name: set(t.get("dependentTasks", [])) for name, t in tasks.items()}
    # resolve first and alone; everything else only when it says train (the dsl.If sub-DAG)
    root = spec["root"]["dag"]["tasks"]
    assert sorted(root) == ["condition-1", "resolve"] and root["condition-1"]["dependentTasks"] == ["resolve"]
    assert root["condition-1"]["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--resolve-Output'] == true"
    assert deps["resolve"] == set() and deps["data-prep"] == set()
    assert deps["calibrate"] == {"data-prep"}
    assert deps["train"] == {"data-prep", "calibrate"}
    assert deps["evaluate"] == {"data-prep", "train"}
    assert deps["register"] == {"data-prep", "calibrate", "train", "evaluate"}
    assert deps["deploy"] == {"register"}  # the serving handoff of the version register made
    assert tasks["deploy"]["inputs"]["parameters"]["version"]["taskOutputParameter"] == {
        "outputParameterKey": "Output", "producerTask": "register"}
    caching = {name: t.get("cachingOptions", {}).get("enableCache", False) for name, t in tasks.items()}
    assert caching == {"resolve": False, "data-prep": True, "calibrate": True, "train": False, "evaluate": False,
                       "register": False, "deploy": False}
    # data prep and calibration are cached on the source's fingerprint, so a cache hit means the same data
    inner = next(c for n, c in spec["components"].items() if n.startswith("comp-condition-"))
    for step in ("data-prep", "calibrate"):
        fp = inner["dag"]["tasks"][step]["inputs"]["parameters"]["data_fingerprint"]
        assert fp == {"componentInputParameter": "pipelinechannel--resolve-data_fingerprint"}, step
        assert "mlflow_run_id" not in inner["dag"]["tasks"][step]["inputs"]["parameters"], step
    # every step after resolve reads the effective config it wrote (config_yaml < typed fields < overrides)
    for step in ("data-prep", "calibrate", "train", "evaluate", "register", "deploy"):
        given = inner["dag"]["tasks"][step]["inputs"]["parameters"]
        assert given["config_yaml"] == {"componentInputParameter": "pipelinechannel--resolve-run_config"}, step
        assert given["overrides"]["runtimeValue"]["constant"] == "", step
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
        # S3 and MLflow credentials are required where mounted (a missing Secret stops the pod before it
        # starts); the Ray token only matters with a Ray cluster. Which step gets which: test_k8s_overlays.py
        assert secrets["fora-s3-credentials"]["optional"] is False
        assert secrets.get("fora-mlflow-credentials", {"optional": False})["optional"] is False
        assert secrets.get("fora-ray-token", {"optional": True})["optional"] is True
        assert platform[name]["securityContext"] == {"runAsUser": "1000", "runAsGroup": "1000",
                                                     "runAsNonRoot": True}
        assert int(platform[name]["activeDeadlineSeconds"]) > 0  # no step hangs forever
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
    assert params["scheduled"]["defaultValue"] is False and params["scheduled"]["parameterType"] == "BOOLEAN"


def test_resources_come_from_the_compiling_config(tmp_path):
    """An 8B-on-GPU config puts calibrate, train, evaluate and register on GPU nodes; data prep stays on CPU."""
    from pipelines.config.run_config import load_run_config

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


def test_resolve_and_data_prep_components_python_func(tmp_path, model_dir):
    from components.data_prep.component import data_prep
    from components.resolve.component import resolve

    cfg = _tiny_config(tmp_path, model_dir)
    decision = Markdown(name="decision", uri=str(tmp_path / "decision.md"), metadata={})
    # the form as KFP hands it over (every value as text); rank changed, the rest at the compiled defaults
    defaults = form_defaults(load_run_config(DEFAULT_CONFIG_PATH), RUN_FORM)  # compiled from configs/cluster.yaml
    assert defaults["max_steps"] == 60 and defaults["rank"] == 32
    form = {**defaults, "max_steps": "60.0", "rank": "8.0"}  # rank changed; max_steps as KFP's text of 60
    r = resolve.python_func(config_yaml=yaml.safe_dump(cfg), overrides="data.max_train=16", form_defaults=defaults,
                            form_name="run", pipeline_run="unit", scheduled=True, decision=decision, **form)
    effective = json.loads(r.run_config)
    assert effective["fora"]["rank"] == 8  # changed in the form
    assert effective["train"]["max_steps"] == 4 and effective["eval"]["tasks"] == ["arc_easy", "boolq"]  # untouched
    assert effective["data"]["max_train"] == 16  # the override
    assert "`fora.rank` = `8`" in (tmp_path / "decision.md").read_text()
    import hashlib

    records = Path(cfg["data"]["source"]).read_bytes()
    assert r.data_fingerprint == "file:sha256:" + hashlib.sha256(records).hexdigest()[:32]
    assert r.Output is True and "no champion yet" in (tmp_path / "decision.md").read_text()  # Output: train
    run = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}").get_run(r.mlflow_run_id)
    assert run.info.run_name == "tiny (unit)" and run.data.tags["data_fingerprint"] == r.data_fingerprint

    data = Dataset(name="data", uri=str(tmp_path / "data"), metadata={})
    card = Markdown(name="card", uri=str(tmp_path / "card.md"), metadata={})
    content_hash = data_prep.python_func(config_yaml=r.run_config, overrides="",
                                         data_fingerprint=r.data_fingerprint, data=data, data_card=card)
    assert len((tmp_path / "data" / "train.jsonl").read_text().splitlines()) == 16
    assert data.metadata["train"] == 16 and content_hash == data.metadata["content_hash"]
    assert json.loads((tmp_path / "data" / "data_card.json").read_text())["source_fingerprint"] == r.data_fingerprint
    assert "| train |" in (tmp_path / "card.md").read_text()


def test_component_user_error_is_one_line(tmp_path, model_dir, capsys):
    from components.data_prep.component import data_prep

    cfg = _tiny_config(tmp_path, model_dir)
    cfg["fora"]["method"] = "vera"
    with pytest.raises(SystemExit) as exit_info:
        data_prep.python_func(config_yaml=yaml.safe_dump(cfg), overrides="", data_fingerprint="x",
                              data=Dataset(name="d", uri=str(tmp_path / "d"), metadata={}),
                              data_card=Markdown(name="c", uri=str(tmp_path / "c"), metadata={}))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fora.method" in err[0] and "vera" in err[0]


def _step_dirs(outputs_root: Path) -> dict[str, Path]:
    """{task name: its output folder} of one local KFP run (tasks inside the dsl.If sub-DAG included)."""
    found: dict[str, Path] = {}
    for out in outputs_root.rglob("executor_output.json"):
        found.setdefault(out.parent.name, out.parent)
    return found


FORM = {"lr": 3e-3, "register_metric": "heldout/loss"}  # the nightly run's typed parameters


def _night_one(tmp_path: Path, model_dir: Path) -> tuple[dict, str, MlflowClient, object, object]:
    """The whole DAG once, as a scheduled run with no champion yet: every artifact, the one MLflow run, the
    registration. Returns (config, its YAML, the registry client, version 1, its MLflow run)."""
    from pipelines.kubeflow.local_runner import run_on_kfp_local

    cfg = _tiny_config(tmp_path, model_dir)
    # the nightly decision is on the user's own held-out data: per-item response loss (continuous, so the
    # automatic choice is the paired bootstrap), lower is better
    cfg["data"].update(max_train=28, max_validation=12)  # 40 records: 12 held out each night
    cfg["register"].update(promotion_test="auto", alpha=0.05)
    text = yaml.safe_dump(cfg)
    # the learning rate and the registry's metric are set as a UI user sets them: typed form parameters
    result = run_on_kfp_local(text, overrides="train.eval_every=4", scheduled=True, params=FORM)
    steps = _step_dirs(Path(result["outputs_root"]))
    expect = {"resolve": ["decision"], "data-prep": ["data/train.jsonl", "data/data_card.json", "data_card"],
              "calibrate": ["calibration/fisher_report.json", "calibration/fisher_profile.png", "fisher_profile"],
              "train": ["adapter/adapter_model.safetensors", "adapter/adapter_config.json", "loss_curve"],
              "evaluate": ["evaluation/eval_results.json", "evaluation/item_scores.json", "table"],
              "register": ["merged/config.json", "registration"], "deploy": ["inference_service", "deployment"]}
    for step, files in expect.items():
        for rel in files:
            assert (steps[step] / rel).exists(), f"{step}/{rel}"
    assert "data:image/png;base64," in (steps["calibrate"] / "fisher_profile").read_text()
    # the serving handoff: the registered version's InferenceService, written (serve.deploy is false)
    isvc = yaml.safe_load((steps["deploy"] / "inference_service").read_text())
    assert isvc["kind"] == "InferenceService" and isvc["metadata"]["annotations"]["fora-pipelines/version"] == "1"
    assert "serve.deploy is false" in (steps["deploy"] / "deployment").read_text()
    assert "data:image/png;base64," in (steps["train"] / "loss_curve").read_text()
    layers = json.loads((steps["calibrate"] / "calibration/fisher_report.json").read_text())["selected_layers"]
    assert len(layers) == 2  # half of the tiny model's 4 layers
    calib_out = json.loads((steps["calibrate"] / "executor_output.json").read_text())
    assert json.loads(calib_out["parameterValues"]["Output"]) == layers
    assert calib_out["artifacts"]["metrics"]["artifacts"][0]["metadata"]["layers_selected"] == 2
    eval_out = json.loads((steps["evaluate"] / "executor_output.json").read_text())
    assert {"base_acc_avg", "tuned_acc_avg", "tuned_heldout_perplexity", "tuned_heldout_loss", "tuned_boolq_acc"} <= set(
        eval_out["artifacts"]["scores"]["artifacts"][0]["metadata"])

    client = MlflowClient(result["run"].tracking_uri)
    v1 = client.get_model_version("tiny-kfp", "1")
    assert v1.tags["K"] == "2" and json.loads(v1.tags["selected_layers"]) == layers
    assert v1.tags["promotion"] == "promote"
    assert str(client.get_model_version_by_alias("tiny-kfp", "champion").version) == "1"
    run = client.get_run(v1.run_id)
    # every step logged into the one MLflow run that the resolve step opened
    assert {"data/train", "train/loss", "tuned/acc_avg", "base/acc_avg", "tuned/heldout/loss", "heldout/loss"} <= set(
        run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 4
    assert run.data.params["selected_layers"] == json.dumps(layers)
    assert run.data.params["train.eval_every"] == "4"  # the override reached the steps
    assert float(run.data.params["train.lr"]) == 3e-3 and run.data.params["register.metric"] == "heldout/loss"
    assert "`train.lr` = `0.003`" in (steps["resolve"] / "decision").read_text()
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"data", "calibration", "eval", "adapter"}
    assert run.data.tags["data_fingerprint"] == v1.tags["data_fingerprint"] != ""
    return cfg, text, client, v1, run


@pytest.mark.integration
def test_whole_dag_and_scheduled_retraining_on_the_local_kfp_runner(tmp_path, model_dir):
    """The whole DAG, then three nights of a recurring run against one registry: night 1 trains, registers
    and promotes (every step's artifacts and the one MLflow run checked); night 2 has new data, scores the
    champion on the same items and promotes only on a paired McNemar win; night 3 has the same data as
    night 2 and skips training. The nights decide on the held-out loss, not on commonsense accuracy."""
    from scipy.stats import ttest_rel

    from pipelines.kubeflow.local_runner import run_on_kfp_local

    cfg, text, client, v1, run = _night_one(tmp_path, model_dir)

    # night 2: the source file was rewritten; same config, so only the fingerprint tells the data changed
    write_records(Path(cfg["data"]["source"]), 40, times=3)  # tonight's export: the same file, other rows
    # nights 2 and 3 skip the base model's scores (the champion is the comparison that decides)
    nightly = "train.eval_every=4,eval.compare_base=false"
    result2 = run_on_kfp_local(text, overrides=nightly, scheduled=True, params=FORM)
    steps2 = _step_dirs(Path(result2["outputs_root"]))
    assert "register" in steps2
    v2 = client.get_model_version("tiny-kfp", "2")
    assert v2.tags["data_fingerprint"] != v1.tags["data_fingerprint"]
    # data prep ran on tonight's rows (on a cluster the fingerprint input makes KFP's cache miss)
    card2 = json.loads((steps2["data-prep"] / "data" / "data_card.json").read_text())
    assert card2["content_hash"] == v2.tags["data_hash"] != v1.tags["data_hash"]
    items = json.loads((steps2["evaluate"] / "evaluation" / "item_scores.json").read_text())
    assert items["champion"]["version"] == 1  # the champion, scored in this run on the same items
    assert items["champion"]["source"] == "scored in this run"  # tonight's held-out items are new
    tuned_loss = items["tuned"]["items"]["heldout/loss"]["heldout"]
    champ_loss = items["champion"]["items"]["heldout/loss"]["heldout"]
    assert len(tuned_loss) == len(champ_loss) == card2["counts"]["validation"] == 12
    gain = sum(champ_loss) / len(champ_loss) - sum(tuned_loss) / len(tuned_loss)  # lower loss is better
    p_t = ttest_rel(champ_loss, tuned_loss, alternative="greater").pvalue  # an independent paired test
    decision = json.loads(v2.tags["champion_decision"])
    assert decision["metric"] == "heldout/loss" and decision["test"]["test"] == "bootstrap"
    assert decision["test"]["diff"] == pytest.approx(gain) and not decision["test"]["higher_is_better"]
    if p_t < 0.001 and gain > 0:  # clear evidence either way must be followed; between, either is defensible
        assert decision["action"] == "promote", decision
    if p_t > 0.5:
        assert decision["action"] == "keep", decision
    assert decision["previous"] == 1 and decision["suite"] == items["suite"] == v2.tags["eval_suite"]
    should_win = decision["action"] == "promote"
    champion = client.get_model_version_by_alias("tiny-kfp", "champion").version
    assert str(champion) == ("2" if should_win else "1")
    registration = (steps2["register"] / "registration").read_text()
    assert f"**{decision['action']}**" in registration and "bootstrap 95% lower bound" in registration

    # night 3: nothing changed since night 2: the resolve step says so and nothing else runs
    result3 = run_on_kfp_local(text, overrides=nightly, scheduled=True, params=FORM)
    steps3 = _step_dirs(Path(result3["outputs_root"]))
    assert set(steps3) == {"resolve"}, sorted(steps3)
    said = (steps3["resolve"] / "decision").read_text()
    assert "Skipped" in said and "same data" in said
    assert len(client.search_model_versions("name = 'tiny-kfp'")) == 2
    skipped = client.search_runs([run.info.experiment_id], "tags.retrain = 'skipped'")
    assert len(skipped) == 1 and "same data" in skipped[0].data.tags["retrain_reason"]
    # the decisions can be explained from the registry alone
    from pipelines.registry.history import read_history

    history = read_history(client, "tiny-kfp")
    print("\n" + "\n".join(f"night {i}: v{e['version']} {e['action']}: {e['reason']}" for i, e in enumerate(history, 1))
          + f"\nnight 3: {skipped[0].data.tags['retrain_reason']}")
    assert [(e["version"], e["action"]) for e in history] == [(1, "promote"), (2, decision["action"])]
    assert history[1]["test"]["diff"] == pytest.approx(gain) and history[1]["metric"] == "heldout/loss"
