"""Fresh data or an honest skip: source fingerprints against independent hashes, the recipe fingerprint's
scope, and the skip decision against a real (SQLite) MLflow registry."""

import hashlib
import json

import pytest
from mlflow.tracking import MlflowClient
from pipeline_fixtures import write_records

from pipelines.config.errors import RunConfigError
from pipelines.config.run_config import DataConfig, RunConfig
from pipelines.data.fingerprint import recipe_fingerprint, source_fingerprint
from pipelines.registry.retrain import skip_decision


def test_a_file_source_is_fingerprinted_by_its_bytes(tmp_path):
    path = write_records(tmp_path / "r.json", 10)
    fp = source_fingerprint(DataConfig(source=str(path)))
    assert fp == "file:sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    write_records(path, 11)  # rewritten in place, same name
    assert source_fingerprint(DataConfig(source=str(path))) != fp


def test_a_folder_source_changes_with_any_file_and_any_name(tmp_path):
    folder = tmp_path / "ds"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.arrow").write_bytes(b"1234")
    (folder / "sub" / "b.json").write_text("{}")
    cfg = DataConfig(source=str(folder))
    fp = source_fingerprint(cfg)
    assert fp.startswith("folder:sha256:") and source_fingerprint(cfg) == fp
    (folder / "sub" / "b.json").write_text("{ }")
    fp2 = source_fingerprint(cfg)
    assert fp2 != fp
    (folder / "sub" / "b.json").rename(folder / "sub" / "c.json")  # same bytes, other name
    assert source_fingerprint(cfg) != fp2


def test_the_builtin_source_and_an_unresolvable_hub_dataset(monkeypatch):
    builtin = source_fingerprint(DataConfig())
    assert builtin.startswith("builtin:sha256:") and builtin == source_fingerprint(DataConfig())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a = source_fingerprint(DataConfig(source="someone/some-dataset"))
    b = source_fingerprint(DataConfig(source="someone/some-dataset"))
    assert a.startswith("unresolved:") and a != b  # never a cache hit, never "unchanged"


def _run(tmp_path, **sections) -> RunConfig:
    base = {"output_dir": str(tmp_path / "out"), "register": {"model_name": "m"}}
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return RunConfig.from_dict(base)


def test_the_recipe_covers_what_decides_the_model_and_nothing_else(tmp_path):
    ref = recipe_fingerprint(_run(tmp_path), "file:sha256:x")
    assert recipe_fingerprint(_run(tmp_path), "file:sha256:y") != ref  # other data
    for changed in ({"train": {"lr": 1e-3}}, {"fora": {"rank": 8}}, {"data": {"max_train": 10}},
                    {"train": {"num_workers": 2}}):
        assert recipe_fingerprint(_run(tmp_path, **changed), "file:sha256:x") != ref, changed
    for same in ({"train": {"checkpoint_every": 7}}, {"train": {"use_ray": False}}, {"eval": {"limit": 3}},
                 {"resources": {"train": {"cpu": 8}}}, {"register": {"margin": 0.01}}):
        assert recipe_fingerprint(_run(tmp_path, **same), "file:sha256:x") == ref, same


def _version(uri: str, name: str, recipe: str, promotion: str, alias: bool) -> int:
    client = MlflowClient(uri)  # client calls only: no process-global MLflow state from other tests
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    exp = client.get_experiment_by_name("retrain-tests")
    run_id = client.create_run(exp.experiment_id if exp else client.create_experiment("retrain-tests")).info.run_id
    v = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id,
                                    tags={"recipe_fingerprint": recipe, "promotion": promotion,
                                          "data_fingerprint": "file:sha256:d"})
    if alias:
        client.set_registered_model_alias(name, "champion", v.version)
    return int(v.version)


def test_skip_only_when_the_same_recipe_was_already_trained_and_judged(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert skip_decision(uri, "m", "R1", "scheduled", scheduled=True) == (False, "training: no champion yet")
    _version(uri, "m", "R1", "promote", alias=True)
    skip, why = skip_decision(uri, "m", "R1", "scheduled", scheduled=True)
    assert skip and "champion v1" in why and "same data" in why
    assert not skip_decision(uri, "m", "R1", "scheduled", scheduled=False)[0]  # a manual run trains
    assert skip_decision(uri, "m", "R1", "always", scheduled=False)[0]
    assert not skip_decision(uri, "m", "R1", "never", scheduled=True)[0]
    assert not skip_decision(uri, "m", "R2", "scheduled", scheduled=True)[0]  # new data: train
    _version(uri, "m", "R2", "keep", alias=False)  # R2 trained, lost its paired test
    skip, why = skip_decision(uri, "m", "R2", "scheduled", scheduled=True)
    assert skip and "v2" in why and "keep" in why
    _version(uri, "m", "R3", "pending", alias=False)  # crashed before its decision: not judged, retrain
    assert not skip_decision(uri, "m", "R3", "scheduled", scheduled=True)[0]
    assert not skip_decision(uri, "m", "unresolved:abc", "always", scheduled=True)[0]


def test_register_settings_are_validated_by_name():
    for field, bad, allowed in (("metric", "f1", "acc_avg, acc_norm_avg"), ("promotion_test", "t", "auto, bootstrap, mcnemar"),
                                ("margin", -0.5, "a finite number >= 0"), ("alpha", 0.7, "(0, 0.5)"), ("approval", "yes", "auto, manual"),
                                ("skip_unchanged", "sometimes", "scheduled, always, never"),
                                ("compare_champion", "yes", "true, false")):
        with pytest.raises(RunConfigError) as err:
            RunConfig.from_dict({"register": {field: bad}})
        assert f"'register.{field}'" in str(err.value) and allowed in str(err.value), field
    assert json.dumps(RunConfig().to_dict()["register"])  # serialisable
