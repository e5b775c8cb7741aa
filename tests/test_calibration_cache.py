"""A night on the same weights, data and ``fora`` settings takes its Fisher files from the cache; anything else
that changes them computes them again. The second pass is forbidden outright (it raises), so a hit is not a
matter of timing."""

import json

import pytest
from pipeline_fixtures import tiny_model_dir, write_records

from pipelines.config.run_config import RunConfig
from pipelines.steps import calibrate as calibrate_module
from pipelines.steps import stages


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def _run(tmp_path, model_dir, records, **fora) -> RunConfig:
    return RunConfig.from_dict({
        "name": "tiny", "model": str(model_dir), "output_dir": str(tmp_path / "out"),
        "data": {"source": str(records), "max_train": 24, "max_validation": 4, "calibration_size": 8},
        "fora": {"rank": 4, "alpha": 8, "layer_budget": 2, "fisher": {"num_batches": 4, "batch_size": 2}, **fora},
        "eval": {"cache": str(tmp_path / "cache")}})


def _calibrate(run, tmp_path, name):
    stages.data_prep(run, tmp_path / name / "data")
    return stages.calibrate(run, tmp_path / name / "data", tmp_path / name / "calibration")


def test_the_same_inputs_take_the_fisher_files_from_the_cache(tmp_path, model_dir, monkeypatch):
    records = write_records(tmp_path / "records.json", 40)
    first = _calibrate(_run(tmp_path, model_dir, records), tmp_path, "night1")
    real = calibrate_module.run_calibration

    def forbidden(*args, **kwargs):
        raise AssertionError("the Fisher pass ran again")

    monkeypatch.setattr(calibrate_module, "run_calibration", forbidden)
    second = _calibrate(_run(tmp_path, model_dir, records), tmp_path, "night2")
    assert second["selected_layers"] == first["selected_layers"] and second["report"] == first["report"]
    for name in ("fisher_report.json", "fisher_profile.png"):
        assert (tmp_path / "night2" / "calibration" / name).read_bytes() == \
            (tmp_path / "night1" / "calibration" / name).read_bytes(), name

    # other data, other Fisher settings, another K, or no cache: computed again
    calls = []
    monkeypatch.setattr(calibrate_module, "run_calibration", lambda *a, **k: calls.append(1) or real(*a, **k))
    other = write_records(tmp_path / "other.json", 40, times=3)
    _calibrate(_run(tmp_path, model_dir, other), tmp_path, "other-data")
    _calibrate(_run(tmp_path, model_dir, records, fisher={"num_batches": 3, "batch_size": 2}), tmp_path, "fisher")
    _calibrate(_run(tmp_path, model_dir, records, layer_budget=3), tmp_path, "k")
    off = _run(tmp_path, model_dir, records)
    off.eval.cache = "off"
    _calibrate(off, tmp_path, "off")
    assert len(calls) == 4
    report = json.loads((tmp_path / "k" / "calibration" / "fisher_report.json").read_text())
    assert len(report["selected_layers"]) == 3


def test_a_half_written_entry_is_a_miss(tmp_path, model_dir):
    records = write_records(tmp_path / "records.json", 40)
    run = _run(tmp_path, model_dir, records)
    _calibrate(run, tmp_path, "night1")
    entries = list((tmp_path / "cache" / "fisher").iterdir())
    assert len(entries) == 1
    (entries[0] / "fisher_report.json").unlink()  # the entry without its report
    again = _calibrate(run, tmp_path, "night2")
    assert (tmp_path / "night2" / "calibration" / "fisher_report.json").exists() and again["selected_layers"]
