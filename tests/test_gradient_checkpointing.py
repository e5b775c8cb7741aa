"""Activation checkpointing (train.gradient_checkpointing) gives the gradients of the plain backward pass while
keeping less for it: on FoRA adapters over a tiny Llama, and through the training loop."""

from __future__ import annotations

import json

import pytest
import torch
from pipeline_fixtures import tiny_model_dir, write_records
from safetensors.torch import load_file
from tiny_models import random_batches, tiny_model

from fora_core import ForaConfig, ModelSource, apply_fora
from fora_core.memory import SavedActivations, enable_activation_checkpointing
from pipelines.config.run_config import RunConfig
from pipelines.steps.data_prep import prepare_data
from pipelines.steps.train import run_training


def _fora_model(checkpointing: bool):
    model = tiny_model("llama", layers=4)
    if checkpointing:
        enable_activation_checkpointing(model)
    model = apply_fora(model, [0, 2, 3], ForaConfig(method="fora", rank=4, dropout=0.0, layer_budget=3))
    for name, p in model.named_parameters():
        if p.requires_grad and "lora_A" in name:  # A = 0 at the start: give it a value, so B gets a gradient
            p.data.normal_(0, 0.1)
    model.train()
    return model


def test_checkpointing_gives_the_same_gradients_and_saves_fewer_activations():
    batch = random_batches(1, batch=4, seq=24)[0]
    grads, saved = {}, {}
    for on in (False, True):
        model = _fora_model(on)
        assert model.base_model.model.is_activation_checkpointing == on
        with SavedActivations(model) as acts:
            loss = model(**batch, use_cache=False).loss
        loss.backward()
        grads[on] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        saved[on] = acts.bytes
    assert grads[False].keys() == grads[True].keys() and grads[False]
    for name in grads[False]:
        torch.testing.assert_close(grads[True][name], grads[False][name], rtol=1e-5, atol=1e-7, msg=name)
    # checkpointed layers keep only their inputs: far less than the layers' own saved activations
    assert saved[True] < 0.5 * saved[False], saved


def test_the_training_loop_with_checkpointing_ends_where_it_ends_without(tmp_path):
    model_dir = tiny_model_dir(tmp_path)
    records = write_records(tmp_path / "records.json", 40)
    adapters = {}
    for on in (False, True):
        cfg = {"name": "gc", "model": str(model_dir), "output_dir": str(tmp_path / f"out{on}"),
               "data": {"source": str(records), "max_train": 32, "max_validation": 4, "calibration_size": 8},
               "fora": {"rank": 4, "alpha": 8, "dropout": 0.0, "fisher": {"num_batches": 4, "batch_size": 2}},
               "train": {"max_steps": 3, "batch_size": 4, "use_ray": False, "eval_every": 3,
                         "gradient_checkpointing": on}}
        run = RunConfig.from_dict(cfg)
        if not (tmp_path / "data").exists():
            _, tok = ModelSource(run.model).load()
            prepare_data(run.data, tok, tmp_path / "data")
        out = run_training(run, tmp_path / "data", [1, 3], tmp_path / f"train{on}")
        adapters[on] = load_file(f"{out['adapter_dir']}/adapter_model.safetensors")
        assert json.loads((tmp_path / f"train{on}" / "history.json").read_text())[-1]["step"] == 3
    for k in adapters[False]:
        torch.testing.assert_close(adapters[True][k], adapters[False][k], rtol=0, atol=1e-5, msg=k)


def test_a_wrong_value_names_the_field():
    with pytest.raises(Exception, match=r"train.gradient_checkpointing.*true or false|train.gradient_checkpointing"):
        RunConfig.from_dict({"train": {"gradient_checkpointing": "yes"}})
