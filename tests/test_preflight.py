"""What a config names (the model's architecture, the data source, a step's inputs) is checked
before any work starts, from the model's config.json alone, and every mistake is one line with exit 2.
A sweep restarted with other data starts a new sweep instead of resuming the old one."""

import json
import time
from pathlib import Path

import pytest
import yaml
from pipeline_fixtures import tiny_model_dir, write_records

from pipelines import cli
from pipelines.config import errors
from pipelines.config.errors import RunConfigError
from pipelines.config.run_config import RunConfig, parse_run_config
from pipelines.preflight.checks import check_model, model_skeleton, preflight


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("m"), layers=4)


def _config(root: Path, model_dir: Path, **sections) -> Path:
    cfg = {"name": "pre", "model": str(model_dir), "output_dir": str(root / "out"),
           "data": {"source": str(write_records(root / "records.json", 12)), "max_length": 64}}
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value) if isinstance(value, dict) else cfg.__setitem__(key, value)
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _one_line_error(argv, capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_the_meta_skeleton_has_the_real_modules_and_no_storage(model_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    skeleton = model_skeleton(AutoConfig.from_pretrained(model_dir))
    real = AutoModelForCausalLM.from_pretrained(model_dir)
    assert [n for n, _ in skeleton.named_modules()] == [n for n, _ in real.named_modules()]
    assert {p.device.type for p in skeleton.parameters()} == {"meta"}
    assert {n: tuple(p.shape) for n, p in skeleton.named_parameters()} == \
        {n: tuple(p.shape) for n, p in real.named_parameters()}


def test_validate_checks_against_the_model_and_says_what(tmp_path, model_dir, capsys):
    config = _config(tmp_path, model_dir)
    assert cli.main(["validate", str(config)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["model"] == str(model_dir)
    assert "LlamaForCausalLM, 4 layers, 512 positions" in captured.err and "K=2" in captured.err
    assert "q_proj" in captured.err and "data source: file" in captured.err


@pytest.mark.parametrize("override, expected", [
    ("fora.target_modules=[q, qkv_proj]", "'fora.target_modules'"),
    ("fora.layer_budget=9", "'fora.layer_budget': 9 (allowed: 1..4 layers"),
    ("sweep.layer_budgets=[2, 6]", "'sweep.layer_budgets': 6 (allowed: 1..4 layers"),
    ("data.max_length=4096", "'data.max_length': 4096 (allowed: at most 512"),
    # k_proj's output: 2 key-value heads x head dim 64 / 4 = 32, the smallest dimension of q, k, v, up, down
    ("fora.rank=33", "'fora.rank': 33 (allowed: 1..32, the smallest dimension"),
    ("data.source=missing/train.jsonl", "data file not found: missing/train.jsonl"),
    ("data.format=hf", "data.format 'hf' needs an HF dataset id"),
    ("eval.heldout.source=missing/heldout.jsonl", "'eval.heldout.source': 'missing/heldout.jsonl' (file not found)"),
    ("eval.tasks=[boolq, my_tasks/quiz.yaml]", "'eval.tasks': 'my_tasks/quiz.yaml' (file not found)"),
])
def test_mistakes_only_the_model_or_the_data_can_reveal(tmp_path, model_dir, capsys, override, expected):
    config = _config(tmp_path, model_dir)
    line = _one_line_error(["validate", str(config), "--set", override], capsys)
    assert expected in line, line
    # --schema-only does not look: the same config passes the schema
    assert cli.main(["validate", str(config), "--set", override, "--schema-only"]) == 0


def test_an_unknown_target_module_stops_fora_run_before_any_work(tmp_path, model_dir, capsys):
    """It used to fail inside the Ray workers after data prep and calibration, retried max_failures times."""
    config = _config(tmp_path, model_dir, train={"use_ray": True, "max_steps": 2})
    t0 = time.perf_counter()
    line = _one_line_error(["run", str(config), "--quiet", "--set", "fora.target_modules=[q, attn.c_attn]"], capsys)
    assert "'fora.target_modules'" in line and "c_attn" in line and "q_proj" in line
    assert not (tmp_path / "out" / "data").exists()  # nothing ran, not even data prep
    assert not (tmp_path / "out" / "mlflow.db").exists()  # and no MLflow run was opened
    assert time.perf_counter() - t0 < 60


def test_check_model_counts_layers_from_the_config(tmp_path):
    six = tiny_model_dir(tmp_path, layers=6)
    run = RunConfig.from_dict({"model": str(six), "fora": {"layer_budget": 0.5}, "data": {"max_length": 64}})
    summary = check_model(run)
    assert (summary["layers"], summary["K"]) == (6, 3)
    # the default targets (q, k, v, up, down), named as in a Llama block
    assert summary["targets"] == ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.up_proj",
                                  "mlp.down_proj"]
    assert "kfac_bytes" not in summary
    # a FILet method: the K-FAC memory of the calibration pass, from the tiny Llama's shapes (hidden 64, MLP 96,
    # 2 of 4 heads for k and v: 32): q (64, 64), k and v (64, 32), up (64, 96), down (96, 64), 6 layers
    filet = RunConfig.from_dict({"model": str(six), "fora": {"method": "fg-filet"}, "data": {"max_length": 64}})
    per_layer = (64**2 + 64**2) + 2 * (64**2 + 32**2) + (64**2 + 96**2) + (96**2 + 64**2)
    assert check_model(filet)["kfac_bytes"] == 4 * 6 * per_layer


def test_an_unknown_model_is_one_line(tmp_path, capsys):
    config = _config(tmp_path, tmp_path / "no-such-model")
    line = _one_line_error(["validate", str(config)], capsys)
    assert "could not load model" in line and "no-such-model" in line


def test_fisher_settings_larger_than_the_calibration_split():
    base = "data: {calibration_size: 64}\n"
    with pytest.raises(RunConfigError, match=r"64 batches of 4 = 256 calibration records, but "
                                             r"data.calibration_size is 64.*num_batches to 16"):
        parse_run_config(base + "fora: {fisher: {num_batches: 64, batch_size: 4}}")
    with pytest.raises(RunConfigError, match="data.calibration_size is 64"):  # an override counts as written
        parse_run_config(base, ["fora.fisher.num_batches=65"])
    parse_run_config(base + "fora: {fisher: {num_batches: 16, batch_size: 4}}")  # fits exactly
    # the defaults (128 batches of 1) adapt to a smaller split: nothing written, nothing to contradict, also
    # after a round trip through to_dict (how a Ray worker or a KFP pod receives the config)
    run = parse_run_config(base)
    RunConfig.from_dict(run.to_dict())
    # methods without a Fisher pass do not care
    parse_run_config(base + "fora: {method: lora, fisher: {num_batches: 64, batch_size: 4}}")


def test_a_missing_step_input_names_the_file_and_its_maker(tmp_path, model_dir, capsys):
    config = _config(tmp_path, model_dir)
    line = _one_line_error(["train", str(config), "--data", str(tmp_path / "nowhere")], capsys)
    assert "train: no data_card.json in" in line and "written by data-prep" in line
    line = _one_line_error(["register", str(config), "--eval", str(tmp_path)], capsys)
    assert "register: no data_card.json" in line  # the first missing input, in the step's order


def test_an_internal_missing_file_is_not_called_the_users_mistake():
    assert not issubclass(FileNotFoundError, errors.USER_ERRORS)
    with pytest.raises(FileNotFoundError), errors.one_line_user_errors():
        Path("/nonexistent/internal/file").read_text()


def test_preflight_checks_the_data_source_kind(tmp_path, model_dir):
    run = RunConfig.from_dict({"model": str(model_dir), "data": {"source": str(tmp_path), "max_length": 64}})
    assert preflight(run)["data"] == "folder"
    run = RunConfig.from_dict({"model": str(model_dir), "data": {"max_length": 64}})
    assert preflight(run)["data"] == "builtin"


def test_a_sweep_restarted_with_other_data_is_a_new_sweep(tmp_path):
    from pipelines.sweep.driver import inputs_fingerprint, set_aside_if_inputs_changed

    run = RunConfig.from_dict({"output_dir": str(tmp_path), "data": {"max_train": 100}})
    sweep = tmp_path / "sweep"
    (sweep / "calibration").mkdir(parents=True)
    (sweep / "calibration" / "fingerprint.txt").write_text(inputs_fingerprint(run))
    (sweep / "parent_run_id.txt").write_text("old-parent")
    set_aside_if_inputs_changed(run, sweep)  # same data: a resume, untouched
    assert (sweep / "parent_run_id.txt").read_text() == "old-parent"
    changed = RunConfig.from_dict({"output_dir": str(tmp_path), "data": {"max_train": 200}})
    set_aside_if_inputs_changed(changed, sweep)
    assert not sweep.exists()
    (aside,) = tmp_path.glob("sweep.replaced-*")
    assert (aside / "parent_run_id.txt").read_text() == "old-parent"  # kept, not deleted
