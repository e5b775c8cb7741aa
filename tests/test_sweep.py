"""The Ray Tune sweep: bad input is one line; a real sweep on a tiny random model (real Ray Tune + Train,
ASHA, MLflow parent/child runs, registration of the best trial); an interrupted sweep resumes without
re-running finished trials or the Fisher pass."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from pipeline_fixtures import tiny_model_dir, write_records

from fora_core import select_layers
from pipelines import cli
from pipelines.config.run_config import RunConfig
from pipelines.sweep.trials import build_arms, count_trials
from pipelines.training.calibration_artifacts import load_selection

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def _config(root: Path, model_dir: Path, **sweep) -> dict:
    records = write_records(root / "records.json", 40)
    return {"name": "tiny-sweep", "model": str(model_dir), "output_dir": str(root / "out"),
            "data": {"source": str(records), "max_train": 32, "max_validation": 8, "calibration_size": 8},
            "fora": {"rank": 4, "alpha": 8, "dropout": 0.0, "fisher": {"num_batches": 4, "batch_size": 2}},
            "train": {"max_steps": 6, "batch_size": 4, "checkpoint_every": 2, "eval_every": 2, "warmup_steps": 0,
                      "cpus_per_worker": 0.4},
            "eval": {"tasks": ["arc_easy"], "limit": 4, "batch_size": 4},
            "register": {"model_name": "tiny-sweep"},
            "sweep": {"layer_budgets": [1, 3], "lr": [3e-2, 1e-7], "stiefel_lr": [1e-2], "max_trials": 4,
                      "scheduler": "asha", "grace_period": 2, "reduction_factor": 2, "max_concurrent": 1,
                      **sweep}}


def _write(root: Path, cfg: dict) -> Path:
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("edit, message", [
    ({"lr": []}, "'sweep.lr': the search space is empty"),
    ({"layer_budgets": []}, "'sweep.layer_budgets': the search space is empty"),
    ({"layer_budgets": [1, 9]}, "'sweep.layer_budgets': 9 (allowed: 1..4 layers"),
    ({"max_trials": 0}, "'sweep.max_trials': 0 (allowed: an integer >= 1)"),
    ({"max_trials": 3}, "the sweep has 4 trials but 'sweep.max_trials' is 3"),
    ({"scheduler": "hyperband-x"}, "'sweep.scheduler': 'hyperband-x' (allowed: asha, median, fifo)"),
    ({"lr": {"loguniform": [1e-3, 1e-5]}}, "'sweep.lr'"),
    ({"methods": ["vera"]}, "'sweep.methods': 'vera'"),
])
def test_bad_sweep_input_is_one_line_and_starts_nothing(tmp_path, model_dir, capsys, edit, message):
    path = _write(tmp_path, _config(tmp_path, model_dir, **edit))
    assert cli.main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out" / "sweep").exists()


def test_arms_and_trial_count(tmp_path, model_dir):
    cfg = _config(tmp_path, model_dir, methods=["fora", "fg-lora", "lora", "stiefel-lora"],
                  layer_budgets=[0.25, 1, 0.5, 2], lr={"loguniform": [1e-5, 1e-3]}, num_samples=3)
    run = RunConfig.from_dict(cfg)
    arms = build_arms(run, num_layers=4)
    # 0.25 of 4 layers and 1 are the same K; all-layer methods get K = L once
    assert arms == [{"method": "fora", "K": 1}, {"method": "fora", "K": 2}, {"method": "fg-lora", "K": 1},
                    {"method": "fg-lora", "K": 2}, {"method": "lora", "K": 4}, {"method": "stiefel-lora", "K": 4}]
    assert count_trials(run, arms) == 6 * 1 * 1 * 3  # loguniform is sampled, not a grid dimension


@pytest.mark.integration
def test_real_sweep_asha_mlflow_children_and_best_registered(tmp_path, model_dir):
    from pipelines.sweep.driver import run_sweep

    # fg-filet: the trials also take FILet's energies from the sweep's one calibration pass
    run = RunConfig.from_dict(_config(tmp_path, model_dir, methods=["fg-filet"]))
    summary = run_sweep(run)
    sweep_dir = run.out.resolve() / "sweep"
    assert summary["fisher_computed"] and summary["finished"] and summary["planned_trials"] == 4
    assert (sweep_dir / "calibration" / "filet_energies.safetensors").exists()
    assert {r["method"] for r in summary["results"]} == {"fg-filet"}
    results = summary["results"]
    assert len(results) == 4 and {(r["K"], r["lr"]) for r in results} == {(1, 3e-2), (1, 1e-7), (3, 3e-2), (3, 1e-7)}
    assert summary["stopped_early"] >= 1, [(r["K"], r["lr"], r["status"], r["steps"]) for r in results]
    assert all(r["steps"] < 6 for r in results if r["status"] == "stopped_early")
    for name in ("results.csv", "results.md", "k_sensitivity.png", "learning_curves.png"):
        assert (sweep_dir / name).stat().st_size > 0, name

    client = MlflowClient(run.tracking_uri)
    parent = client.get_run(summary["parent_run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4
    report, _ = load_selection(sweep_dir / "calibration")
    for child in children:
        k = int(child.data.params["K"])
        # every trial took its layers from the one Fisher report
        assert json.loads(child.data.params["layers"]) == select_layers(report, k)
        assert child.data.tags["fora.trial_status"] in ("completed", "stopped_early")
        assert len(client.get_metric_history(child.info.run_id, "train/loss")) >= 2
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")} >= {
        "sweep/results.csv", "sweep/k_sensitivity.png", "sweep/learning_curves.png"}

    best = summary["best"]
    assert best["lr"] == 3e-2  # a learning rate of 1e-7 cannot win
    version = client.get_model_version("tiny-sweep", str(best["registration"]["version"]))
    assert version.tags["source"] == "sweep" and version.tags["sweep_trial"] == best["trial_id"]
    assert version.tags["K"] == str(best["K"])
    assert json.loads(version.tags["selected_layers"]) == select_layers(report, best["K"])


@pytest.mark.integration
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path, model_dir):
    from pipelines.sweep.driver import run_sweep

    cfg = _config(tmp_path, model_dir, scheduler="fifo")
    path = _write(tmp_path, cfg)
    run = RunConfig.from_dict(cfg)
    sweep_dir = run.out.resolve() / "sweep"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "sweep", str(path), "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(run.tracking_uri)

    def closed() -> list:
        try:
            exp = client.get_experiment_by_name("fora")
            return [] if exp is None else client.search_runs(
                [exp.experiment_id], "tags.`fora.trial_status` = 'completed'")
        except Exception:
            return []

    deadline = time.time() + 600
    while len(closed()) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(2)
    assert proc.poll() is None, "the sweep ended before it could be interrupted:\n" + proc.stdout.read()[-3000:]
    proc.send_signal(signal.SIGINT)  # what Ctrl-C does
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "run the same command again to resume" in out, out[-3000:]
    first = {r.data.tags["fora.trial_id"]: r.info.run_id for r in closed()}
    assert len(first) >= 2
    report_mtime = (sweep_dir / "calibration" / "fisher_report.json").stat().st_mtime

    summary = run_sweep(run)
    assert summary["resumed"] and not summary["fisher_computed"] and summary["finished"]
    assert (sweep_dir / "calibration" / "fisher_report.json").stat().st_mtime == report_mtime
    children = client.search_runs([client.get_experiment_by_name("fora").experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'")
    by_trial = {}
    for child in children:
        by_trial.setdefault(child.data.tags["fora.trial_id"], []).append(child.info.run_id)
    assert len(by_trial) == 4 and all(len(v) == 1 for v in by_trial.values())
    for trial_id, run_id in first.items():
        assert by_trial[trial_id] == [run_id]
        # a finished trial trained its 6 steps once: not one more step after the restart
        assert len(client.get_metric_history(run_id, "train/loss")) == 6


@pytest.mark.integration
def test_sweep_component_python_func_hands_the_best_trial_on(tmp_path, model_dir):
    from kfp.dsl import HTML, Artifact, Markdown, Model

    from components.sweep.component import sweep
    from pipelines.steps import stages

    cfg = _config(tmp_path, model_dir, layer_budgets=[2], lr=[3e-2, 1e-7], scheduler="fifo")
    run = RunConfig.from_dict(cfg)
    parent = stages.start_tracking(run)
    stages.data_prep(run, tmp_path / "data", parent)
    stages.calibrate(run, tmp_path / "data", tmp_path / "calib", parent)

    def art(cls, name):
        return cls(name=name, uri=str(tmp_path / "kfp" / name), metadata={})

    outs = {"results": art(Artifact, "results"), "results_table": art(Markdown, "table"),
            "k_sensitivity": art(HTML, "k"), "learning_curves": art(HTML, "curves"),
            "best_adapter": art(Model, "best")}
    best_config, tags = sweep.python_func(
        config_yaml=yaml.safe_dump(cfg), overrides="", mlflow_run_id=parent, pipeline_run="unit-run",
        data=Artifact(name="d", uri=str(tmp_path / "data"), metadata={}),
        calibration=Artifact(name="c", uri=str(tmp_path / "calib"), metadata={}), **outs)
    best = yaml.safe_load(best_config)
    assert best["train"]["lr"] == 3e-2 and best["fora"]["layer_budget"] == 2
    assert json.loads(tags)["source"] == "sweep"
    assert (tmp_path / "kfp" / "best" / "adapter_model.safetensors").exists()
    assert "data:image/png;base64," in (tmp_path / "kfp" / "k").read_text()
    assert outs["best_adapter"].metadata["lr"] == 3e-2


def test_a_multi_worker_trial_uses_train_backend(tmp_path, model_dir):
    """A sweep trial of two workers is built by the train step's builder, so ``train.backend`` holds there too.

    The GPU configuration on this CPU machine: Ray declares two GPUs (``num_gpus=2``), the trial asks for them
    (``train.use_gpu: true``) and names gloo. A trainer that picked NCCL from ``use_gpu`` (as the sweep once did)
    cannot start its process group without CUDA; the trial must finish, and its checkpoint records the worker
    group that trained it: two workers over gloo."""
    import ray

    from pipelines.sweep.driver import run_sweep

    cfg = _config(tmp_path, model_dir, methods=["fora"], layer_budgets=[1], lr=[3e-2], stiefel_lr=[1e-2],
                  max_trials=1, register_best=False)
    cfg["train"].update(num_workers=2, cpus_per_worker=0.4, use_gpu=True, backend="gloo", max_steps=2,
                        checkpoint_every=2, eval_every=2, max_failures=0)
    ray.shutdown()
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, configure_logging=False)
    try:
        summary = run_sweep(RunConfig.from_dict(cfg))
    finally:
        ray.shutdown()
    assert summary["finished"], summary["results"]
    assert [r["status"] for r in summary["results"]] == ["completed"]
    metas = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("fora_checkpoint.json")]
    assert metas and {(m["workers"], m["collective_backend"]) for m in metas} == {(2, "gloo")}
