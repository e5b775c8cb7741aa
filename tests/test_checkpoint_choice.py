"""The checkpoint a run keeps: the lowest validation loss among the evaluation points that hold the guards measured
in training, and an early stop after ``train.early_stopping_patience`` points without a better one.

The choice is checked against a brute-force reference written from the definition (every point's guards
evaluated with the textbook bound, then the argmin); the training tests run a tiny random Llama for real
(in-process and on Ray Train) and make it get worse on purpose from a chosen step (``faults.AscendFrom``)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
from pipeline_fixtures import prepared_data_dir, tiny_model_dir, write_records
from safetensors.torch import load_file

from pipelines.config.errors import RunConfigError
from pipelines.config.run_config import RunConfig
from pipelines.steps.train import run_training
from pipelines.training.checkpoint_choice import CHOICE_FILE, Choice
from pipelines.training.faults import AscendFrom

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
LAYERS = [1, 3]


def reference_choice(points, base, guards):
    """Brute force from the definition: eligible = every guard's bound holds (lower is better for both
    metrics: x <= b + t, t = tol * |b| when relative); chosen = the eligible point of least validation loss
    (the earliest on a tie)."""
    keys = {"heldout/loss": "val_loss", "general/perplexity": "general_perplexity"}
    eligible = []
    for p in points:
        ok = all(p[keys[m]] <= base[m] + (tol * abs(base[m]) if rel else tol) for m, tol, rel in guards)
        if ok:
            eligible.append(p)
    return min(eligible, key=lambda p: (p["val_loss"], p["step"]))["step"] if eligible else None


def reference_stop(points, base, guards, patience):
    """The first point after which ``patience`` points in a row brought no new best; None if never."""
    best, since = None, 0
    for i, p in enumerate(points):
        chosen = reference_choice(points[: i + 1], base, guards)
        if chosen is not None and chosen != best:
            best, since = chosen, 0
        else:
            since += 1
        if patience and since >= patience:
            return p["step"]
    return None


def run_config(guards, rule="best", patience=0) -> RunConfig:
    return RunConfig.from_dict({"train": {"choose_checkpoint": rule, "early_stopping_patience": patience},
                                "register": {"guards": [{"metric": m, "tolerance": t, "relative": r}
                                                        for m, t, r in guards]}})


@pytest.mark.parametrize("seed", range(40))
def test_the_choice_and_the_stop_match_brute_force(seed):
    rng = random.Random(seed)
    base = {"heldout/loss": 2.0, "general/perplexity": 20.0}
    guards = rng.sample([("general/perplexity", rng.choice([0.05, 0.1, 0.25]), True),
                         ("general/perplexity", rng.choice([1.0, 3.0]), False),
                         ("heldout/loss", rng.choice([0.0, 0.1]), True)], k=rng.randint(0, 3))
    patience = rng.randint(0, 3)
    points = [{"step": 10 * (i + 1), "val_loss": round(rng.uniform(0.2, 2.5), 2),
               "general_perplexity": rng.uniform(18, 28), "kl_drift": rng.uniform(0, 0.3)} for i in range(8)]
    choice = Choice.for_run(run_config(guards, patience=patience))
    choice.base = base
    stopped = None
    for p in points:
        choice.consider(p)
        if stopped is None and choice.should_stop():
            stopped = p["step"]
    assert choice.best_step == reference_choice(points, base, guards)
    assert stopped == reference_stop(points, base, guards, patience)
    # what a resumed run rebuilds from its history is the same choice
    history = [{**points[0], "base_val_loss": 2.0, "base_general_perplexity": 20.0}, *points[1:]]
    assert Choice.replay(run_config(guards, patience=patience), history).best_step == choice.best_step


def test_a_wrong_choice_setting_names_the_field_and_the_values():
    with pytest.raises(RunConfigError, match=r"train.choose_checkpoint.*last, best"):
        RunConfig.from_dict({"train": {"choose_checkpoint": "lowest"}})
    with pytest.raises(RunConfigError, match=r"train.early_stopping_patience"):
        RunConfig.from_dict({"train": {"early_stopping_patience": -1}})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def config(root: Path, model_dir: Path, guards=(), **train) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    records = write_records(root / "records.json", 40)
    return {"name": "tiny", "model": str(model_dir), "output_dir": str(root / "out"),
            "data": {"source": str(records), "max_train": 32, "max_validation": 8, "calibration_size": 8},
            "fora": {"rank": 4, "alpha": 8, "dropout": 0.0, "fisher": {"num_batches": 4, "batch_size": 2}},
            "train": {"max_steps": 12, "batch_size": 4, "lr": 3e-3, "checkpoint_every": 3, "eval_every": 3,
                      "use_ray": False, "max_failures": 1, **train},
            "eval": {"tasks": ["boolq"], "limit": 4, "general_tokens": 128},
            "register": {"model_name": "tiny-fora", "guards": list(guards)}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("data")
    return prepared_data_dir(root, config(root, model_dir))


def checkpoint_adapters(run: RunConfig) -> dict[int, dict]:
    """Every checkpoint's adapter by step, read from the checkpoint namespace."""
    out = {}
    for meta in Path(run.checkpoint_dir).rglob("fora_checkpoint.json"):
        out[json.loads(meta.read_text())["step"]] = load_file(str(meta.parent / "adapter" / "adapter_model.safetensors"))
    return out


def equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("use_ray", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["in-process", "ray"])
def test_a_run_that_gets_worse_keeps_the_best_step_and_stops_early(tmp_path, model_dir, data_dir, use_ray):
    """Descend for 6 steps, then climb: the validation loss of steps 9 and 12 is worse than step 6's, so with
    patience 1 the run stops at step 9 (not 12), and ``adapter/`` is step 6's checkpoint, bit for bit."""
    run = RunConfig.from_dict(config(tmp_path, model_dir, use_ray=use_ray, choose_checkpoint="best",
                                     early_stopping_patience=1))
    out = run_training(run, data_dir, LAYERS, tmp_path / "train", hooks=[AscendFrom(6)])
    history = json.loads((tmp_path / "train" / "history.json").read_text())
    points = [h for h in history if "val_loss" in h]
    assert [p["step"] for p in points] == [3, 6, 9]  # stopped after one point without a better one
    assert points[2]["val_loss"] > points[1]["val_loss"]  # the climb made it worse (the premise)
    assert all("general_perplexity" in p and "kl_drift" in p for p in points)
    assert points[0]["base_val_loss"] > points[0]["val_loss"]  # the base was measured with adapters off
    expected = min(points, key=lambda p: p["val_loss"])["step"]
    choice = json.loads((Path(out["adapter_dir"]) / CHOICE_FILE).read_text())
    assert choice["chosen_step"] == expected == 6 and choice["stopped_early"] and choice["last_step"] == 9
    adapters = checkpoint_adapters(run)
    got = load_file(str(Path(out["adapter_dir"]) / "adapter_model.safetensors"))
    assert equal(got, adapters[6]) and not equal(got, adapters[9])
    last = load_file(str(tmp_path / "train" / "adapter-last" / "adapter_model.safetensors"))
    assert equal(last, adapters[9])
    if not use_ray:  # the early stop finished the run: the same command again does not resume it from step 9
        again = run_training(run, data_dir, LAYERS, tmp_path / "train2", hooks=[AscendFrom(6)])
        assert again["resumed_from_step"] == 0 and again["checkpoints"] != out["checkpoints"]


def test_a_guard_broken_at_every_point_keeps_the_last_step_and_says_so(tmp_path, model_dir, data_dir):
    """Climbing from the first step, the validation loss is above the base's at every point: a held-out loss
    guard of tolerance 0 holds nowhere."""
    run = RunConfig.from_dict(config(tmp_path, model_dir, guards=[{"metric": "heldout/loss", "tolerance": 0.0}],
                                     choose_checkpoint="best", max_steps=6))
    out = run_training(run, data_dir, LAYERS, tmp_path / "train", hooks=[AscendFrom(0)])
    choice = json.loads((Path(out["adapter_dir"]) / CHOICE_FILE).read_text())
    assert choice["chosen_step"] == 6 and "no evaluation point held the guards" in choice["reason"]
    assert all(p["val_loss"] > choice["base"]["heldout/loss"] for p in choice["points"])  # the premise
    assert all(p["broken"] and "heldout/loss" in p["broken"][0] for p in choice["points"])
    assert not (tmp_path / "train" / "adapter-last").exists()


def test_a_resumed_run_keeps_the_best_step_it_found_before_the_failure(tmp_path, model_dir, data_dir):
    """The process dies at step 8, after the step-6 checkpoint (the best so far); the re-run resumes there, climbs
    to a worse step 9, stops, and still returns step 6's adapter: the checkpoint carried it."""
    from pipelines.training.faults import FailAt

    run = RunConfig.from_dict(config(tmp_path, model_dir, choose_checkpoint="best", early_stopping_patience=1))
    with pytest.raises(RuntimeError, match="injected failure at step 7"):
        run_training(run, data_dir, LAYERS, tmp_path / "train", hooks=[AscendFrom(6), FailAt(7)])
    out = run_training(run, data_dir, LAYERS, tmp_path / "train", hooks=[AscendFrom(6)])
    assert out["resumed_from_step"] == 6
    choice = json.loads((Path(out["adapter_dir"]) / CHOICE_FILE).read_text())
    assert [p["step"] for p in choice["points"]] == [3, 6, 9] and choice["chosen_step"] == 6
    got = load_file(str(Path(out["adapter_dir"]) / "adapter_model.safetensors"))
    assert equal(got, checkpoint_adapters(run)[6])


def test_the_model_card_names_the_chosen_step_and_every_point():
    from pipelines.registry.model_card import _checkpoint_lines

    choice = Choice.for_run(run_config([("general/perplexity", 0.1, True)]))
    choice.base = {"heldout/loss": 3.0, "general/perplexity": 20.0}
    for step, loss, ppl in ((10, 0.7, 21.0), (20, 0.4, 25.0), (30, 0.45, 26.0)):
        choice.consider({"step": step, "val_loss": loss, "general_perplexity": ppl})
    lines = "\n".join(_checkpoint_lines(choice.summary(30, 60, stopped_early=True)))
    assert "The adapter of step 10 of 30" in lines and "stopped early at step 30 of 60" in lines
    assert "| 10 **(chosen)** | 0.7000 | 21.00 | hold |" in lines
    assert "| 20 | 0.4000 | 25.00 | guard general/perplexity: tuned 25 vs base 20 (must be <= 22" in lines
