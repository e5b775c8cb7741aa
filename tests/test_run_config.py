from pathlib import Path

import pytest

from pipelines.config.errors import RunConfigError
from pipelines.config.run_config import load_run_config, parse_run_config

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
        ("fora: {method: vera}", "'fora.method'"),
        ("train: {batch_size: 0}", "'train.batch_size'"),
        ("train: {bacth_size: 4}", "unknown field 'train.bacth_size'"),
        ("eval: {tasks: [boolq, boolq]}", "'eval.tasks'"),
            ("eval: {tasks: ['not a name!']}", "'eval.tasks'"),
            ("eval: {heldout: {metrics: [bleu]}}", "'eval.heldout.metrics'"),
            ("eval: {heldout: {metrics: [contains]}}", "'eval.heldout.contains'"),
            ("eval: {heldout: {metrics: [regex], regex: '(('}}", "'eval.heldout.regex'"),
            ("eval: {heldout: {turns: first}}", "'eval.heldout.turns'"),
            ("eval: {heldout: {sourc: x}}", "unknown field 'eval.heldout.sourc'"),
            ("register: {metric: heldout/contains}", "'register.metric'.*not in eval.heldout.metrics"),
            ("register: {metric: piqa/acc}\neval: {tasks: [boolq]}", "'register.metric'.*not in eval.tasks"),
            ("register: {metric: f1}", "'register.metric'.*acc_avg"),
            ("register: {metric: heldout/loss}\neval: {heldout: {source: ''}}", "'register.metric'.*no held-out"),
            ("register: {guards: [{metric: general/perplexity, tolerance: -1}]}", "tolerance"),
            ("register: {guards: [{metric: heldout/rougeL}]}", r"'register.guards\[0\].metric'.*rougeL"),
            ("register: {guards: [{metric: boolq/acc, tol: 1}]}", r"unknown field 'register.guards\[0\].tol'"),
        ("data: {template: chat}", "'data.template'"),
        ("modle: x", "unknown field 'modle'"),
        ("train: [1, 2]", "'train': \\[1, 2\\] \\(allowed: a mapping \\('train' is a section"),
        ("fora: {layer_budget: 0}", "'fora.layer_budget'"),
        ("name: ../../etc", "'name'"),                      # the name names folders and S3 prefixes
        ("name: a/b", "'name'"),
        ("storage: {uri: /tmp/x}", "'storage.uri'"),
        ("storage: {create_bucket: 'yes'}", "'storage.create_bucket'"),
        ("ray: {address: 'ray://head:10001'}", "'ray.address'"),
        ("ray: {placement_timeout_s: 0}", "'ray.placement_timeout_s'"),
        ("resources: {train: {gpus: -1}}", "'resources.train.gpus'"),
        ("resources: {train: {memory: lots}}", "'resources.train.memory'"),
        ("resources: {train: {cpu: 0}}", "'resources.train.cpu'"),
        ("resources: {evaluate: {tolerations: [{key: a, effect: Never}]}}", r"'resources.evaluate.tolerations\[0\].effect'"),
        ("resources: {train: {gpu: 1}}", "unknown field 'resources.train.gpu'"),
        ("resources: {trian: {}}", "unknown field 'resources.trian'"),
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


def test_resources_keep_the_step_defaults_for_unset_fields(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("resources: {train: {gpus: 2, node_selector: {pool: gpu}}}\n")
    run = load_run_config(path)
    assert run.resources.train.gpus == 2 and run.resources.train.node_selector == {"pool": "gpu"}
    assert (run.resources.train.cpu, run.resources.train.memory, run.resources.train.retries) == ("8", "32G", 2)
    assert run.resources.data_prep.gpus == 0 and run.resources.data_prep.cpu == "2"
    # a round trip through the resolved dict (how a Ray job receives the config) keeps them
    from pipelines.config.run_config import RunConfig

    assert RunConfig.from_dict(run.to_dict()).resources == run.resources


def test_checkpoints_default_under_storage(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("storage: {uri: 's3://bkt/runs/'}\n")
    assert load_run_config(path).checkpoint_dir == "s3://bkt/runs/checkpoints"
    path.write_text("storage: {uri: 's3://bkt/runs'}\ntrain: {checkpoint_dir: /ckpt}\n")
    assert load_run_config(path).checkpoint_dir == "/ckpt"


@pytest.mark.parametrize("typed", [
    ["eval.tasks=[boolq, piqa]", "train.max_steps=3"],
    ["sweep.lr={loguniform: [1e-5, 1e-3]}", "name=x"],
    ["data.source=a,b.json", 'register.model_name="m, n=o"'],
])
def test_overrides_travel_to_the_pods_exactly_as_typed(typed):
    """R7: the CLI joins --set items into one pipeline parameter; the components split it back."""
    from pipelines.config.overrides import join_overrides, split_overrides

    assert split_overrides(join_overrides(typed)) == typed


def test_overrides_typed_in_the_kfp_ui():
    from pipelines.config.overrides import split_overrides

    assert split_overrides("train.max_steps=200, fora.layer_budget=0.25") == ["train.max_steps=200",
                                                                             "fora.layer_budget=0.25"]
    assert split_overrides("eval.tasks=[boolq, piqa], train.lr=1e-4") == ["eval.tasks=[boolq, piqa]", "train.lr=1e-4"]
    assert split_overrides("a.b=1\nc.d=[x, y]\n") == ["a.b=1", "c.d=[x, y]"]
    assert split_overrides("") == []


def test_exponent_numbers_without_a_dot_are_numbers_in_files_and_overrides():
    """YAML 1.1 (PyYAML) reads 1e-3 as a string; a learning rate typed that way must still be a number."""
    from pipelines.config.run_config import parse_run_config

    run = parse_run_config("name: x\ntrain: {lr: 1e-3, stiefel_lr: 2E-4}", ["sweep.lr=[1e-3, 3e-4]"])
    assert run.train.lr == 0.001 and run.train.stiefel_lr == 0.0002
    assert run.sweep.lr == {"grid": [0.001, 0.0003]}
    assert parse_run_config("name: x1e3").name == "x1e3"  # not a number: stays text


@pytest.mark.parametrize("text,overrides,expected", [
    ("", [], "the config is empty"),
    ("# only a comment\n", [], "the config is empty"),
    ("train:\n  max_steps: [1\n", [], "not valid YAML (line 3, column 1"),
    ("output_dir: 5\n", [], "invalid value for 'output_dir': 5"),
    ("model: 123\n", [], "invalid value for 'model': 123"),
    ("name: x\n", ["train.lr=[1"], "override 'train.lr=[1': the value is not valid YAML"),
    ("train: {max_steps: 3}\n", ["train.max_steps.x=1"], "'train.max_steps' is a value, not a section"),
    ("name: x\n", [".x=1"], "'.x' is not a section.field name"),
])
def test_config_mistakes_are_one_line_errors(text, overrides, expected):
    with pytest.raises(RunConfigError) as err:
        parse_run_config(text, overrides, where="c.yaml")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_folder_or_a_binary_file_as_config(tmp_path):
    with pytest.raises(RunConfigError, match="is a folder, not a config file"):
        load_run_config(tmp_path)
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(RunConfigError, match="not a UTF-8 text file"):
        load_run_config(binary)
