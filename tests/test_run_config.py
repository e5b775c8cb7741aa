from pathlib import Path

import pytest

from pipelines.run_config import RunConfigError, load_run_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path):
    run = load_run_config(path)
    assert run.name and run.fora.method in ("fora", "fg-lora", "stiefel-lora", "lora")
    assert run.train.max_steps >= 1


def test_there_are_shipped_configs():
    assert {"default.yaml", "smoke.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize(
    "body, match",
    [
        ("fora: {method: dora}", "'fora.method'"),
        ("train: {batch_size: 0}", "'train.batch_size'"),
        ("train: {bacth_size: 4}", "unknown field 'train.bacth_size'"),
        ("eval: {tasks: [mmlu]}", "'eval.tasks'"),
        ("data: {template: chat}", "'data.template'"),
        ("modle: x", "unknown field 'modle'"),
        ("train: [1, 2]", "'train' must be a mapping"),
        ("fora: {layer_budget: 0}", "'fora.layer_budget'"),
    ],
)
def test_bad_values_name_the_field(tmp_path, body, match):
    path = tmp_path / "c.yaml"
    path.write_text(body)
    with pytest.raises(RunConfigError if "method" not in match and "layer_budget" not in match else ValueError,
                       match=match):
        load_run_config(path)


def test_overrides_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {max_steps: 5}\n")
    run = load_run_config(path, ["train.max_steps=7", "fora.rank=4"])
    assert run.train.max_steps == 7 and run.fora.rank == 4
    with pytest.raises(RunConfigError, match="not found"):
        load_run_config(tmp_path / "nope.yaml")
