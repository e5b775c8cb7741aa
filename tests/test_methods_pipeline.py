"""The new methods through the pipeline's steps on a tiny model: FILet's energies from the one calibration
pass, Fourier and residual adapters saved, scored, merged and registered, and training resumed exactly."""

import json

import pytest
import torch
from peft import PeftModel
from pipeline_fixtures import tiny_model_dir
from safetensors.torch import load_file
from test_cli import _write_config
from transformers import AutoModelForCausalLM

from fora_core.methods import METHODS
from pipelines import cli
from pipelines.config.run_config import load_run_config

QUICK = ["fg-filet"]  # the one with its own calibration path; every other method runs in make test-all
ALL_OTHERS = [pytest.param(m, marks=pytest.mark.slow) for m in METHODS if m not in QUICK]


@pytest.mark.parametrize("method", QUICK + ALL_OTHERS)
def test_method_runs_every_step_from_the_shell(method, tmp_path):
    model_dir = tiny_model_dir(tmp_path)
    config = _write_config(tmp_path, model_dir)
    out = tmp_path / "out"
    extra = ["--set", f"fora.method={method}", "--set", "fora.fourier.n_coefficients=40"]
    for step in ("data-prep", "calibrate", "train", "evaluate", "register"):
        assert cli.main([step, str(config), "--quiet", *extra]) == 0, step
    report = json.loads((out / "calibration" / "fisher_report.json").read_text())
    has_energies = (out / "calibration" / "filet_energies.safetensors").exists()
    assert has_energies == ("filet" in method) == ("filet" in report)
    if has_energies:  # one energy per input dimension of every target module of every layer
        energies = load_file(str(out / "calibration" / "filet_energies.safetensors"))
        assert len(energies) == 4 * 5 and all(v.dim() == 1 and (v >= 0).all() for v in energies.values())
    meta = json.loads((out / "train" / "adapter" / "fora_config.json").read_text())
    assert meta["fora"]["method"] == method
    # the registered merged model is a plain transformers model with the adapter's logits
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]])
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(out / "train" / "adapter"))
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft(ids).logits, atol=1e-4)
    results = json.loads((out / "eval" / "eval_results.json").read_text())
    assert results  # scored by lm-eval like any other adapter


@pytest.mark.parametrize("method", ["fora-filet", "fourier-fora"])
def test_training_of_the_new_methods_resumes_exactly(method, tmp_path):
    from pipelines.steps import stages
    from pipelines.steps.train import run_training
    from pipelines.training.faults import FailAt

    model_dir = tiny_model_dir(tmp_path)
    config = _write_config(tmp_path, model_dir)
    overrides = [f"fora.method={method}", "fora.fourier.n_coefficients=40", "train.max_steps=4",
                 "train.checkpoint_every=2"]
    run = load_run_config(config, overrides)
    out = tmp_path / "out"
    stages.data_prep(run, out / "data")
    stages.calibrate(run, out / "data", out / "calibration")
    layers = [1, 3]
    ref = run_training(run, out / "data", layers, tmp_path / "a", calib_dir=out / "calibration")
    broken = load_run_config(config, [*overrides, f"output_dir={tmp_path / 'b-out'}"])
    with pytest.raises(RuntimeError, match="injected failure at step 3"):
        run_training(broken, out / "data", layers, tmp_path / "b", hooks=[FailAt(3)], calib_dir=out / "calibration")
    got = run_training(broken, out / "data", layers, tmp_path / "b", calib_dir=out / "calibration")
    assert got["resumed_from_step"] == 2
    a = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    b = load_file(f"{got['adapter_dir']}/adapter_model.safetensors")
    assert ref["metrics"]["step"] == got["metrics"]["step"] == 4
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
