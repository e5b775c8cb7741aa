"""Training never keeps a non-finite model, resumes exactly at the default dropout, and an interruption is one
line: on a tiny random Llama, real training (in-process and Ray Train), real MLflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from pipeline_fixtures import prepared_data_dir, tiny_model_dir, write_records
from safetensors.torch import load_file

from pipelines import cli
from pipelines.config.errors import TrainingDiverged
from pipelines.config.run_config import RunConfig
from pipelines.steps.train import run_training
from pipelines.training.faults import FailAt, NaNLossAt

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
LAYERS = [1, 3]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def config(root: Path, model_dir: Path, **train) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    records = write_records(root / "records.json", 40)
    return {"name": "tiny", "model": str(model_dir), "output_dir": str(root / "out"),
            "data": {"source": str(records), "max_train": 32, "max_validation": 4, "calibration_size": 8},
            "fora": {"rank": 4, "alpha": 8, "fisher": {"num_batches": 4, "batch_size": 2}},  # default dropout
            "train": {"max_steps": 6, "batch_size": 4, "checkpoint_every": 2, "eval_every": 3, "use_ray": False,
                      "max_failures": 1, **train},
            "eval": {"tasks": ["boolq"], "limit": 4, "batch_size": 4, "general_text": ""},
            "register": {"model_name": "tiny-fora"}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("data")
    return prepared_data_dir(root, config(root, model_dir))


def _adapter(path: str) -> dict:
    return load_file(str(Path(path) / "adapter_model.safetensors"))


@pytest.mark.parametrize("method", ["rslora", "loraplus", "pissa", "fora"])
def test_a_diverging_method_stops_and_saves_no_adapter(tmp_path, model_dir, data_dir, method):
    """The methods that diverged in the methods ablation, at a learning rate that overflows at once."""
    cfg = config(tmp_path, model_dir, lr=1e30, stiefel_lr=1e30)
    cfg["fora"]["method"] = method
    run = RunConfig.from_dict(cfg)
    with pytest.raises(TrainingDiverged, match=rf"training diverged at step 1: .*method '{method}'.*no adapter"):
        run_training(run, data_dir, LAYERS, tmp_path / "train")
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize("use_ray", [False, True], ids=["in-process", "ray"])
def test_divergence_keeps_the_last_finite_checkpoint_and_nothing_after_it(tmp_path, model_dir, data_dir, use_ray):
    run = RunConfig.from_dict(config(tmp_path, model_dir, use_ray=use_ray))
    with pytest.raises(TrainingDiverged, match=r"diverged at step 5: loss nan.*last finite checkpoint \(step 4\)"):
        run_training(run, data_dir, LAYERS, tmp_path / "train", hooks=[NaNLossAt(4)])
    assert not (tmp_path / "train" / "adapter").exists()
    metas = [json.loads(p.read_text()) for p in Path(run.checkpoint_dir).rglob("fora_checkpoint.json")]
    assert max(m["step"] for m in metas) == 4
    for ckpt in Path(run.checkpoint_dir).rglob("adapter_model.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(ckpt)).values()), ckpt


@pytest.mark.parametrize("use_ray", [False, True], ids=["in-process", "ray"])
def test_resume_at_the_default_dropout_equals_the_uninterrupted_run(tmp_path, model_dir, data_dir, use_ray):
    """docs/verification.md's claim: an interrupted training ends with the same adapter (dropout 0.05 draws masks from the
    generators, so the checkpoint must carry their state)."""
    straight = RunConfig.from_dict(config(tmp_path / "a", model_dir))
    assert straight.fora.dropout > 0
    ref = run_training(straight, data_dir, LAYERS, tmp_path / "a" / "train")
    broken = RunConfig.from_dict(config(tmp_path / "b", model_dir, use_ray=use_ray))
    if use_ray:  # a worker dies after the step-2 checkpoint; FailureConfig restarts it from there
        got = run_training(broken, data_dir, LAYERS, tmp_path / "b" / "train", hooks=[FailAt(3)])
    else:  # the process dies; the re-run resumes from the checkpoint
        with pytest.raises(RuntimeError, match="injected failure at step 3"):
            run_training(broken, data_dir, LAYERS, tmp_path / "b" / "train", hooks=[FailAt(3)])
        got = run_training(broken, data_dir, LAYERS, tmp_path / "b" / "train")
    history = json.loads((tmp_path / "b" / "train" / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]  # no step lost or repeated
    a, b = _adapter(ref["adapter_dir"]), _adapter(got["adapter_dir"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (k, (a[k] - b[k]).abs().max())


def test_fora_run_on_a_diverging_config_registers_nothing_and_marks_the_run_failed(tmp_path, model_dir, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, model_dir, lr=1e30)))
    code = cli.main(["run", str(path), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("fora: error: training diverged at step 1:"), err[-1]
    out = tmp_path / "out"
    assert not (out / "train" / "adapter").exists() and not (out / "merged").exists()
    client = MlflowClient(f"sqlite:///{(out / 'mlflow.db').resolve()}")
    assert client.search_registered_models() == []
    [mlrun] = client.search_runs([client.get_experiment_by_name("fora").experiment_id])
    assert mlrun.info.status == "FAILED" and mlrun.data.tags["fora.failed_step"] == "train"


def test_sigterm_during_training_is_one_line_and_the_rerun_resumes(tmp_path, model_dir):
    cfg = config(tmp_path, model_dir, max_steps=100, checkpoint_every=10, eval_every=100)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(path), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    deadline = time.monotonic() + 240
    for line in proc.stdout:  # the loop prints every 10 steps
        lines.append(line)
        if "step 20/100" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    tail = (("".join(lines) + rest).strip().splitlines())[-1]
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines) + rest
    assert tail.startswith("fora: interrupted at step ") and "rerun the same command to resume" in tail, tail
    assert "Traceback" not in rest
    step = int(tail.split("last checkpoint: step ")[1].split(")")[0])
    assert step >= 10  # checkpoint_every 10; the signal came after step 20 was printed
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed at step {step} of 100" in again.stdout + again.stderr


def test_a_diverged_sweep_trial_is_marked_and_never_offers_a_model():
    """collect_results on a Tune result grid (a stand-in: Tune's own objects need a finished experiment)."""
    from types import SimpleNamespace

    import pandas as pd

    from pipelines.sweep.report import collect_results
    from pipelines.sweep.tune_runner import _best

    def trial(tid, lr, frame):
        return SimpleNamespace(trial_id=tid, status="TERMINATED", checkpoint=SimpleNamespace(path=f"/ckpt/{tid}"),
                               config={"lr": lr, "stiefel_lr": 0.3, "arm": {"method": "lora", "K": 4}}), frame

    ok = pd.DataFrame({"step": [1, 2], "loss": [2.0, 1.5], "val_loss": [2.1, 1.6], "step_seconds": [1.0, 1.0],
                       "time_total_s": [2.0, 3.0]})
    bad = pd.DataFrame({"step": [1, 2], "loss": [2.0, float("nan")], "val_loss": [0.5, 0.5],
                        "step_seconds": [1.0, None], "time_total_s": [2.0, 3.0], "diverged": [None, 1],
                        "problem": [None, "loss nan"]})
    trials = [trial("a", 1e-3, ok), trial("b", 1e30, bad)]
    grid = SimpleNamespace(_experiment_analysis=SimpleNamespace(trials=[t for t, _ in trials],
                                                                trial_dataframes={t.trial_id: f for t, f in trials}))
    rows = {r["trial_id"]: r for r in collect_results(grid, max_steps=2)}
    assert rows["a"]["status"] == "completed" and rows["a"]["checkpoint_path"] == "/ckpt/a"
    assert rows["b"]["status"] == "diverged" and rows["b"]["checkpoint_path"] is None
    assert _best(list(rows.values()), "val_loss", "min")["trial_id"] == "a"  # its lower val_loss does not win
