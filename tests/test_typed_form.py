"""The typed parameters of the Kubeflow UI form: compiled with their help and the compiling config's defaults,
read back from the text KFP hands a component, applied with the documented precedence (config_yaml < changed
form fields < overrides), and a bad value stopped in the first step in one line naming the parameter."""

from pathlib import Path

import pytest
import yaml

from pipelines.config.errors import RunConfigError
from pipelines.config.form import RUN_FORM, SWEEP_FORM, form_defaults, parse_params, read_value, resolve_form
from pipelines.config.run_config import RunConfig, load_run_config
from pipelines.kubeflow.fora_pipeline import DEFAULT_CONFIG_PATH, PIPELINE_YAML
from pipelines.kubeflow.fora_sweep_pipeline import SWEEP_PIPELINE_YAML

KFP_TYPES = {"str": "STRING", "int": "NUMBER_INTEGER", "float": "NUMBER_DOUBLE", "budget": "NUMBER_DOUBLE",
             "list": "LIST", "space": "LIST", "bool": "BOOLEAN"}
CONFIG = "name: t\noutput_dir: {out}\ntrain: {{lr: 1.0e-3, max_steps: 7}}\nfora: {{rank: 16}}\n"


def _cluster_value(path: str):
    """A field's value as configs/cluster.yaml writes it, else the schema's default (read without the form)."""
    node = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            node = RunConfig().to_dict()
            for p in path.split("."):
                node = node[p]
            return node
        node = node[part]
    return node


@pytest.mark.parametrize("spec_path,fields", [(PIPELINE_YAML, RUN_FORM), (SWEEP_PIPELINE_YAML, SWEEP_FORM)])
def test_the_compiled_form_shows_typed_fields_with_help_and_the_configs_defaults(spec_path: Path, fields):
    params = next(yaml.safe_load_all(spec_path.read_text()))["root"]["inputDefinitions"]["parameters"]
    for f in fields:
        p = params[f.name]
        assert p["parameterType"] == KFP_TYPES[f.kind], f.name
        assert " ".join(p["description"].split()) == f.help, f.name  # what the UI shows under the field
        want = _cluster_value(f.path)
        want = want["grid"] if isinstance(want, dict) else want  # the schema's default search space is a grid
        assert p["defaultValue"] == (float(want) if f.kind == "budget" else want), f.name
    assert {"config_yaml", "overrides"} <= set(params)
    assert all(p.get("description") for p in params.values())  # no field without help
    names = [f.name for f in RUN_FORM]
    for must in ("model", "data_source", "data_format", "method", "layer_budget", "rank", "max_steps", "lr",
                 "stiefel_lr", "eval_tasks", "heldout_metrics", "register_metric", "approval",
                 "registered_model_name"):
        assert must in names
    assert {"sweep_layer_budgets", "sweep_lr", "sweep_stiefel_lr", "sweep_methods"} <= {f.name for f in SWEEP_FORM}


def test_precedence_config_then_changed_fields_then_overrides(tmp_path):
    text = CONFIG.format(out=tmp_path)
    defaults = form_defaults(load_run_config(DEFAULT_CONFIG_PATH), RUN_FORM)
    assert defaults["lr"] == 6e-4 and defaults["max_steps"] == 60 and defaults["rank"] == 32
    # as KFP hands them over: text; lr left at the form's default, max_steps and rank changed
    form = {"lr": "0.0006", "max_steps": "9.0", "rank": "8", "method": "fora", "approval": "manual"}
    run, effective, changed = resolve_form(text, ["fora.rank=12"], form, defaults, RUN_FORM)
    assert run.train.lr == 1e-3  # untouched form field: config_yaml's value stays
    assert run.train.max_steps == 9  # a changed form field wins over config_yaml
    assert run.fora.rank == 12  # an override wins over the form
    assert run.register.approval == "manual"
    assert changed == {"train.max_steps": 9, "fora.rank": 8, "register.approval": "manual"}
    again = yaml.safe_load(effective)  # what every later step reads: the same config
    assert (again["train"]["max_steps"], again["fora"]["rank"], again["train"]["lr"]) == (9, 12, 1e-3)


def test_kfp_text_reads_back_as_each_kind():
    by = {f.name: f for f in RUN_FORM + SWEEP_FORM}
    assert read_value(by["max_steps"], "60.0") == 60 and isinstance(read_value(by["max_steps"], "60"), int)
    assert read_value(by["lr"], "0.0002") == 2e-4
    assert read_value(by["layer_budget"], "8.0") == 8 and isinstance(read_value(by["layer_budget"], 8.0), int)
    assert read_value(by["layer_budget"], "0.5") == 0.5
    assert read_value(by["layer_budget"], "1.0") == 1.0 and isinstance(read_value(by["layer_budget"], "1"), float)
    assert read_value(by["eval_tasks"], '["boolq", "piqa"]') == ["boolq", "piqa"]
    assert read_value(by["eval_tasks"], "") == []
    assert read_value(by["sweep_lr"], "[1e-4, 3.0e-4]") == [1e-4, 3e-4]
    assert read_value(by["model"], "Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"


@pytest.mark.parametrize("name,value,says", [
    ("max_steps", "2.5", "pipeline parameter 'max_steps' (train.max_steps): '2.5' is not a whole number"),
    ("max_steps", "0", "pipeline parameter 'max_steps': invalid value for 'train.max_steps'"),
    ("lr", "fast", "pipeline parameter 'lr' (train.lr): 'fast' is not a number"),
    ("method", "vera", "pipeline parameter 'method': invalid value for 'fora.method': 'vera' (allowed: fora,"),
    ("layer_budget", "1.5", "pipeline parameter 'layer_budget' (fora.layer_budget): '1.5' is not a whole number"),
    ("data_format", "csv", "pipeline parameter 'data_format': invalid value for 'data.format'"),
    ("eval_tasks", "boolq", "pipeline parameter 'eval_tasks' (eval.tasks): 'boolq' is not a JSON list"),
    ("approval", "maybe", "pipeline parameter 'approval': invalid value for 'register.approval'"),
    ("epochs", "3", "unknown pipeline parameter(s) epochs (allowed: model, "),
])
def test_a_bad_value_names_the_parameter_and_the_field(tmp_path, name, value, says):
    defaults = form_defaults(load_run_config(DEFAULT_CONFIG_PATH), RUN_FORM)
    with pytest.raises(RunConfigError) as err:
        resolve_form(CONFIG.format(out=tmp_path), [], {name: value}, defaults, RUN_FORM)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_the_sweep_form_sets_the_search_space(tmp_path):
    defaults = form_defaults(load_run_config(DEFAULT_CONFIG_PATH), SWEEP_FORM)
    form = {"sweep_layer_budgets": "[0.25, 8]", "sweep_lr": "[1e-4, 3e-4]", "max_trials": "4.0"}
    run = resolve_form(CONFIG.format(out=tmp_path), [], form, defaults, SWEEP_FORM)[0]
    assert run.sweep.layer_budgets == [0.25, 8] and run.sweep.lr == {"grid": [1e-4, 3e-4]} and run.sweep.max_trials == 4


def test_cli_params_are_typed_and_unknown_names_are_refused():
    assert parse_params(["max_steps=5", "layer_budget=8", "eval_tasks=[boolq]"], RUN_FORM) == {
        "max_steps": 5, "layer_budget": 8.0, "eval_tasks": ["boolq"]}
    with pytest.raises(RunConfigError, match="--param 'epochs=3': give NAME=VALUE with NAME one of model,"):
        parse_params(["epochs=3"], RUN_FORM)


def test_the_resolve_step_stops_a_bad_form_value_in_one_line(tmp_path, capsys):
    from kfp.dsl import Markdown

    from components.resolve.component import resolve

    defaults = form_defaults(load_run_config(DEFAULT_CONFIG_PATH), RUN_FORM)
    with pytest.raises(SystemExit) as exit_info:
        resolve.python_func(config_yaml=CONFIG.format(out=tmp_path), overrides="", form_defaults=defaults,
                            form_name="run", pipeline_run="unit", scheduled=False,
                            decision=Markdown(name="d", uri=str(tmp_path / "d.md"), metadata={}),
                            **{**defaults, "method": "vera"})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pipeline parameter 'method'" in err[0] and "fora.method" in err[0]


def test_the_resolve_step_takes_every_form_field_as_its_own_typed_input():
    import inspect

    from components.resolve.component import resolve

    params = inspect.signature(resolve.python_func).parameters
    for f in RUN_FORM + SWEEP_FORM:
        assert f.name in params, f"components/resolve: add the input {f.name}: {f.annotation.__name__} = None"
        assert params[f.name].annotation is f.annotation, f.name
        assert params[f.name].default == (0 if f.annotation is int else None), f.name  # never read: see its doc


def test_fora_run_takes_the_same_typed_parameters(capsys):
    from pipelines import cli

    assert cli.main(["run", "configs/smoke.yaml", "--param", "method=vera"]) == 2  # checked before any work
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid value for 'fora.method': 'vera'" in err[0]
    assert cli.main(["run", "configs/smoke.yaml", "--kfp", "--param", "max_steps=2.5"]) == 2
    assert "pipeline parameter 'max_steps' (train.max_steps): '2.5' is not a whole number" in capsys.readouterr().err
