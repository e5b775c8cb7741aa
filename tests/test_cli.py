"""The ``fora`` CLI: one command per step chained by hand, compile, submit (against a stand-in KFP client,
and against an endpoint that is not there), and one-line errors."""

import json
import types
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from pipeline_fixtures import tiny_model_dir, write_records

from pipelines import cli
from pipelines.config.overrides import split_overrides
from pipelines.config.run_config import load_run_config, parse_run_config


def _write_config(root: Path, model_dir: Path) -> Path:
    records = write_records(root / "records.json", 30)
    cfg = {"name": "steps", "model": str(model_dir), "output_dir": str(root / "out"),
           "data": {"source": str(records), "max_train": 16, "max_validation": 4, "calibration_size": 4},
           "fora": {"rank": 4, "alpha": 8, "dropout": 0.0, "fisher": {"num_batches": 2, "batch_size": 2}},
           "train": {"max_steps": 2, "batch_size": 4, "checkpoint_every": 2, "eval_every": 2, "use_ray": False},
           "eval": {"tasks": ["arc_easy"], "limit": 4, "batch_size": 4},
           "register": {"model_name": "tiny-steps"}}
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_each_step_from_the_shell_in_order(tmp_path, capsys):
    config = _write_config(tmp_path, tiny_model_dir(tmp_path))
    out = tmp_path / "out"
    for step, produced in (("data-prep", "data/train.jsonl"), ("calibrate", "calibration/fisher_report.json"),
                           ("train", "train/adapter/adapter_model.safetensors"),
                           ("evaluate", "eval/eval_results.json"), ("register", "merged/config.json")):
        assert cli.main([step, str(config), "--quiet"]) == 0, step
        assert (out / produced).exists(), produced
    assert "registered 'tiny-steps' version 1 as champion" in capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    assert client.get_model_version("tiny-steps", "1").tags["K"] == "2"
    # the model card: base, data and its fingerprint, method and layers, accuracy with its interval
    card = (out / "merged" / "README.md").read_text()
    items = json.loads((out / "eval" / "item_scores.json").read_text())["tuned"]["items"]["acc_avg"]["arc_easy"]
    assert f"| **acc_avg** (promotion; higher is better) | {sum(items) / len(items):.4f} [" in card
    assert "file:sha256:" in card and "at K = 2 decoder layers" in card and "No champion was measured" in card

    # register.artifact: adapter: the version holds the adapter and its base model's name, a fraction of the
    # merged model's bytes, and loads with the same call into the same logits
    assert cli.main(["register", str(config), "--quiet", "--set", "register.artifact=adapter",
                     "--out", str(tmp_path / "adapter-form")]) == 0
    v2 = client.get_model_version("tiny-steps", "2")
    assert v2.tags["artifact"] == "adapter" and v2.tags["promotion"] == "keep"  # v1 has no item scores
    import mlflow
    import torch

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    merged_py = mlflow.pyfunc.load_model("models:/tiny-steps/1")
    adapter_py = mlflow.pyfunc.load_model("models:/tiny-steps/2")
    prompt = ["Question: 1 plus 1?\nAnswer:"]
    assert merged_py.predict(prompt, params={"max_new_tokens": 4}) == adapter_py.predict(prompt, params={
        "max_new_tokens": 4})
    sig = merged_py.metadata.get_input_schema()
    assert [t.name for t in sig.input_types()] == ["string"]
    assert merged_py.metadata.get_params_schema().params[0].name == "max_new_tokens"
    example = Path(mlflow.artifacts.download_artifacts("models:/tiny-steps/1", dst_path=str(tmp_path / "dl")))
    assert "sky blue" in (example / "input_example.json").read_text()
    merged, from_adapter = merged_py._model_impl, adapter_py._model_impl  # the loader module's MergedModel
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]])
    with torch.no_grad():
        a, b = merged.model(ids).logits, from_adapter.model(ids).logits
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert "fora_base.json" in (tmp_path / "adapter-form" / "README.md").read_text()
    files = {p.name for p in (tmp_path / "adapter-form").iterdir()}
    assert {"adapter_model.safetensors", "fora_base.json"} <= files and "model.safetensors" not in files
    size = lambda folder: sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())  # noqa: E731
    assert size(tmp_path / "adapter-form") < size(out / "merged") / 2


def test_a_step_without_its_input_says_which_is_missing(tmp_path, capsys):
    config = _write_config(tmp_path, tmp_path / "no-model")
    assert cli.main(["calibrate", str(config)]) == 2  # checked before the model is loaded
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "calibrate: no calibration.jsonl in" in err[0] and "written by data-prep" in err[0]
    assert cli.main(["data-prep", str(config)]) == 2  # data prep has its input: then the model is the problem
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-model" in err[0]


def test_compile_writes_a_loadable_pipeline(tmp_path, capsys):
    from kfp import components

    assert cli.main(["compile", "--output-dir", str(tmp_path)]) == 0
    assert components.load_component_from_file(str(tmp_path / "fora_pipeline.yaml")).name == "fora-pipeline"
    sweep = components.load_component_from_file(str(tmp_path / "fora_sweep_pipeline.yaml"))
    assert sweep.name == "fora-sweep-pipeline"


def _real_recurring_parameters():
    import inspect

    import kfp

    return inspect.signature(kfp.Client.create_recurring_run).parameters


_REAL_RECURRING = _real_recurring_parameters()


class _FakeClient:
    calls: list = []

    tokens: list = []

    def __init__(self, host, namespace=None, **auth):
        self.host = host
        _FakeClient.tokens.append(auth.get("existing_token"))

    def create_run_from_pipeline_package(self, path, arguments, run_name, experiment_name, namespace,
                                         service_account=None):
        spec = next(yaml.safe_load_all(Path(path).read_text()))
        _FakeClient.calls.append(("run", spec["pipelineInfo"]["name"], arguments, experiment_name, service_account,
                                  spec))
        return types.SimpleNamespace(run_id="r-123")

    def create_experiment(self, name, namespace=None):
        return types.SimpleNamespace(experiment_id="e-1")

    def create_recurring_run(self, experiment_id, job_name, cron_expression, pipeline_package_path, params,
                             service_account=None, **options):
        assert set(options) <= set(_REAL_RECURRING), set(options) - set(_REAL_RECURRING)  # the real client takes them
        _FakeClient.calls.append(("recurring", experiment_id, cron_expression, params, service_account, options))
        return types.SimpleNamespace(recurring_run_id="rr-9")


def test_submit_and_schedule_send_the_compiled_pipeline_and_config(monkeypatch, capsys):
    import kfp

    monkeypatch.setattr(kfp, "Client", _FakeClient)
    _FakeClient.calls.clear()
    config = Path("configs/smoke.yaml")
    typed = ["train.max_steps=7", "eval.tasks=[boolq, piqa]", "resources.train.gpus=1"]
    argv = ["submit", str(config), "--host", "http://kfp.example", "--service-account", "fora-pipeline"]
    assert cli.main(argv + [a for t in typed for a in ("--set", t)]) == 0
    kind, name, arguments, experiment, account, spec = _FakeClient.calls[0]
    assert (kind, name, experiment, account) == ("run", "fora-pipeline", "fora", "fora-pipeline")
    assert arguments["config_yaml"] == config.read_text()
    # the list override keeps its comma all the way to the pods' parser
    assert split_overrides(arguments["overrides"]) == typed
    assert parse_run_config(arguments["config_yaml"], split_overrides(arguments["overrides"])).eval.tasks == \
        ["boolq", "piqa"]
    # the config's resources were compiled in: the train pod asks for the GPU
    res = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert res["accelerator"]["resourceCount"] == "1"
    assert "http://kfp.example/#/runs/details/r-123" in capsys.readouterr().out
    assert cli.main(["submit", str(config), "--host", "http://kfp.example", "--schedule", "0 0 3 * * 1"]) == 0
    assert _FakeClient.calls[1][:3] == ("recurring", "e-1", "0 0 3 * * 1")
    # a paused or late schedule does not run its backlog (KFP's catch-up is on unless no_catchup), one at a time
    assert _FakeClient.calls[1][5] == {"no_catchup": True, "max_concurrency": 1}


def test_submit_sends_typed_parameters_as_the_ui_form_does(monkeypatch):
    import kfp

    monkeypatch.setattr(kfp, "Client", _FakeClient)
    _FakeClient.calls.clear()
    argv = ["submit", "configs/smoke.yaml", "--host", "http://kfp.example", "--param", "method=lora",
            "--param", "max_steps=5", "--param", "eval_tasks=[boolq]"]
    assert cli.main(argv) == 0
    arguments, spec = _FakeClient.calls[0][2], _FakeClient.calls[0][5]
    assert (arguments["method"], arguments["max_steps"], arguments["eval_tasks"]) == ("lora", 5, ["boolq"])
    # the compiled form's defaults are the submitted config's values, so what was not given keeps them
    form = spec["root"]["inputDefinitions"]["parameters"]
    smoke = load_run_config("configs/smoke.yaml")
    assert form["rank"]["defaultValue"] == smoke.fora.rank and form["model"]["defaultValue"] == smoke.model
    _FakeClient.calls.clear()
    assert cli.main(argv[:4] + ["--param", "method=vera"]) == 2  # checked here, before anything is sent
    assert _FakeClient.calls == []


def test_submit_to_an_unreachable_endpoint_is_one_line(capsys):
    assert cli.main(["submit", "configs/smoke.yaml", "--host", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the KFP endpoint http://127.0.0.1:9" in err[0]


def test_submit_validates_the_config_before_sending(tmp_path, monkeypatch, capsys):
    import kfp

    monkeypatch.setattr(kfp, "Client", _FakeClient)
    _FakeClient.calls.clear()
    assert cli.main(["submit", "configs/smoke.yaml", "--host", "http://kfp.example",
                     "--set", "fora.layer_budget=2.5"]) == 2
    assert _FakeClient.calls == []
    assert "fora.layer_budget" in capsys.readouterr().err


def test_validate_prints_the_resolved_config(capsys):
    assert cli.main(["validate", "configs/default.yaml", "--set", "train.max_steps=3"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["max_steps"] == 3


@pytest.mark.parametrize("argv, expected", [
    (["submit", "configs/smoke.yaml", "--host", "notaurl"], "--host 'notaurl': give the KFP API endpoint as a URL"),
    (["submit", "configs/smoke.yaml", "--host", "http://kfp.example", "--schedule", "0 3 * * *"],
     "KFP's cron has 6 fields, seconds first: '0 0 3 * * *'"),
    (["submit", "configs/smoke.yaml", "--host", "http://kfp.example", "--schedule", "every day"],
     "not a cron expression of 6 fields"),
    (["compile", "--output-dir", "/proc/fora-cannot-be-here"], "--output-dir /proc/fora-cannot-be-here: cannot create"),
    (["data-prep", "configs/smoke.yaml", "--set", "output_dir=/proc/fora-cannot-be-here"],
     "output_dir /proc/fora-cannot-be-here: cannot create it"),
])
def test_careless_cli_input_is_one_line_before_anything_is_contacted(monkeypatch, capsys, argv, expected):
    """Found by probing the CLI: a host without a scheme, a 5-field (Unix) cron, an output folder that cannot
    be created used to reach the KFP client or a traceback."""
    monkeypatch.setattr("kfp.Client", _FakeClient)
    _FakeClient.calls.clear()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert _FakeClient.calls == []


def test_registry_commands_on_a_database_that_is_not_there_create_nothing(tmp_path, capsys):
    assert cli.main(["registry", "list", "configs/smoke.yaml", "--set", f"output_dir={tmp_path}"]) == 2
    assert f"no MLflow database at {tmp_path.resolve() / 'mlflow.db'}" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_a_step_writing_elsewhere_does_not_need_output_dir(tmp_path):
    """A Ray job runs `fora train ... --out s3://...` as another user, on a config whose output_dir is the
    submitting pod's private folder: only where the step writes must be creatable (found by make cluster-test)."""
    config = _write_config(tmp_path, tiny_model_dir(tmp_path))
    assert cli.main(["data-prep", str(config), "--quiet", "--set", "output_dir=/proc/fora-not-here",
                     "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "data_card.json").exists()


def test_submit_to_a_multi_user_kfp_sends_the_token_from_its_file_and_never_prints_it(monkeypatch, tmp_path, capsys):
    import kfp

    monkeypatch.setattr(kfp, "Client", _FakeClient)
    _FakeClient.tokens.clear()
    token = tmp_path / "token"
    token.write_text("eyJhbGciOi.secret-token-value\n")
    argv = ["submit", "configs/smoke.yaml", "--host", "https://kubeflow.example.com/pipeline", "--namespace", "team-a"]
    assert cli.main(argv + ["--token-file", str(token)]) == 0
    assert _FakeClient.tokens == ["eyJhbGciOi.secret-token-value"]
    assert "secret-token-value" not in "".join(capsys.readouterr())
    assert cli.main(argv + ["--token-file", str(tmp_path / "absent")]) == 2
    assert "--token-file" in capsys.readouterr().err
