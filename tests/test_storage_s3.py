"""``pipelines/runtime/storage.py`` and S3 checkpoint namespaces against a real S3 server: SeaweedFS's ``weed mini``,
a separate process reached over loopback with its own access keys (``tests/cluster/topology.py``)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch
from pipeline_fixtures import tiny_model_dir, write_records
from safetensors.torch import load_file

from pipelines.config.run_config import RunConfig
from pipelines.runtime import checkpoints, storage
from pipelines.steps.train import run_training

sys.path.insert(0, str(Path(__file__).parent / "cluster"))
from topology import Topology, free_port  # noqa: E402

BUCKET = "unit-tests"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    topo = Topology(root=tmp_path_factory.mktemp("s3-server"))
    saved = dict(os.environ)
    try:
        topo.start_s3()
        for var in ("AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE"):
            os.environ.pop(var, None)
        os.environ.update(topo.s3_env())
        topo.s3().create_bucket(Bucket=BUCKET)
        yield topo
    finally:
        os.environ.clear()
        os.environ.update(saved)
        topo.stop()


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_written_by_ray_s_filesystem_comes_back_whole(s3, tmp_path):
    """Ray Train writes checkpoints through pyarrow, which leaves folder markers (empty keys ending in /);
    reading the folder back with boto3 must skip them, not fail on them."""
    src = tmp_path / "src"
    (src / "adapter").mkdir(parents=True)
    (src / "adapter" / "w.bin").write_bytes(os.urandom(3000))
    (src / "meta.json").write_text('{"step": 2}')
    path, fs = storage.ray_storage(f"s3://{BUCKET}/ray/ns")
    pafs.copy_files(str(src), f"{path}/checkpoint_1", destination_filesystem=fs)
    fs.create_dir(f"{path}/empty_marker_only")
    got = storage.localize(f"s3://{BUCKET}/ray/ns/checkpoint_1", tmp_path / "back")
    assert _tree(got) == _tree(src)
    assert sorted(storage.list_keys(f"s3://{BUCKET}/ray/ns")) == ["checkpoint_1/adapter/w.bin",
                                                                   "checkpoint_1/meta.json"]


def test_upload_download_and_atomic_local_copy(s3, tmp_path):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "x.txt").write_text("x")
    (src / "y.json").write_text("{}")
    uri = storage.copy_to(src, f"s3://{BUCKET}/copy/one")
    assert storage.exists(uri) and storage.exists(f"{uri}/y.json") and not storage.exists(f"{uri}-no")
    with storage.local_input(uri) as local:
        assert _tree(local) == _tree(src)
        scratch = local
    assert not scratch.exists()  # the download is removed after the block


def test_an_s3_source_s_fingerprint_changes_when_the_object_is_rewritten(s3):
    """A nightly export rewrites the same key: its fingerprint (ETag, from a HEAD request) must change, so the
    KFP cache of data prep misses; an untouched object keeps its fingerprint."""
    import hashlib

    from pipelines.config.run_config import DataConfig
    from pipelines.data.fingerprint import source_fingerprint

    uri = f"s3://{BUCKET}/sources/train.json"
    storage.write_text(uri, '[{"instruction": "a", "output": "b"}]')
    cfg = DataConfig(source=uri)
    first = source_fingerprint(cfg)
    assert first == source_fingerprint(cfg)  # stable while the object is unchanged
    # a single-part upload's ETag is the MD5 of its bytes (the S3 API's definition): an independent check
    assert first == f"s3:{uri}@" + hashlib.md5(b'[{"instruction": "a", "output": "b"}]').hexdigest()
    storage.write_text(uri, '[{"instruction": "c", "output": "d"}]')
    assert source_fingerprint(cfg) != first


def test_a_missing_bucket_is_named_in_one_line_or_created(s3):
    with pytest.raises(storage.StorageError) as err:
        storage.ensure_bucket("s3://no-such-bucket-here/x", create=False)
    msg = str(err.value)
    assert "\n" not in msg and "'no-such-bucket-here'" in msg and s3.s3_endpoint in msg
    storage.ensure_bucket("s3://made-by-fora/x", create=True)
    assert "made-by-fora" in {b["Name"] for b in s3.s3().list_buckets()["Buckets"]}


def test_wrong_keys_are_one_line_naming_endpoint_and_bucket_never_the_key(s3, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-" + "0" * 20)
    with pytest.raises(storage.StorageError) as err:
        storage.read_text(f"s3://{BUCKET}/copy/one/y.json")
    msg = str(err.value)
    assert "\n" not in msg and s3.s3_endpoint in msg and f"bucket '{BUCKET}'" in msg
    assert "refused" in msg and "not-the-secret" not in msg and s3.secret_key not in msg


def test_an_unreachable_endpoint_is_one_line(s3, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    with pytest.raises(storage.StorageError) as err:
        storage.list_keys(f"s3://{BUCKET}/anything")
    msg = str(err.value)
    assert "\n" not in msg and f"cannot reach the S3 endpoint {dead}" in msg


# -- R1: a re-run never returns an older run's model --------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from fora_core import ModelSource
    from pipelines.steps.data_prep import prepare_data

    root = tmp_path_factory.mktemp("r1")
    model = tiny_model_dir(root / "model")
    run = _run(root, model)
    _, tok = ModelSource(run.model).load()
    prepare_data(run.data, tok, root / "data")
    return root, model


def _run(root: Path, model: Path, **train) -> RunConfig:
    records = write_records(root / "records.json", 24)
    return RunConfig.from_dict({
        "name": "tiny", "model": str(model), "output_dir": str(root / "out"),
        "data": {"source": str(records), "max_train": 16, "max_validation": 4, "calibration_size": 4},
        "fora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_steps": 4, "batch_size": 4, "checkpoint_every": 2, "eval_every": 4, "use_ray": False,
                  "checkpoint_dir": f"s3://{BUCKET}/checkpoints", **train}})


def _weights(result: dict, tmp: Path) -> dict[str, torch.Tensor]:
    local = storage.localize(result["adapter_dir"], Path(tempfile.mkdtemp(dir=tmp)))
    return load_file(str(local / "adapter_model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_rerun_with_another_config_trains_fresh_and_a_retry_reuses_its_own(s3, tiny, tmp_path):
    root, model = tiny
    data, layers = root / "data", [1, 3]
    first = run_training(_run(root, model), data, layers, f"s3://{BUCKET}/out/a", run_key="pipeline-run-1")
    assert first["steps_run"] == 4 and first["checkpoints"].startswith(f"s3://{BUCKET}/checkpoints/tiny/")
    w_first = _weights(first, tmp_path)

    # the same pipeline run retried after a later step failed: its own finished checkpoint, no new training
    retry = run_training(_run(root, model), data, layers, f"s3://{BUCKET}/out/a2", run_key="pipeline-run-1")
    assert retry["steps_run"] == 0 and retry["namespace_state"] == "finished"
    assert _same(_weights(retry, tmp_path), w_first)

    # the same run name and key with another learning rate: another namespace, trained from scratch
    other = run_training(_run(root, model, lr=3e-3), data, layers, f"s3://{BUCKET}/out/b", run_key="pipeline-run-1")
    assert other["steps_run"] == 4 and other["checkpoints"] != first["checkpoints"]
    assert not _same(_weights(other, tmp_path), w_first)

    # other layers: another namespace too
    moved = run_training(_run(root, model), data, [0, 2], f"s3://{BUCKET}/out/c", run_key="pipeline-run-1")
    assert moved["steps_run"] == 4 and moved["checkpoints"] not in (first["checkpoints"], other["checkpoints"])


def test_checkpoints_copied_in_from_another_run_are_never_resumed(s3, tiny, tmp_path, caplog):
    root, model = tiny
    data, layers = root / "data", [1, 3]
    done = run_training(_run(root, model), data, layers, f"s3://{BUCKET}/out/d", run_key="pipeline-run-2")
    # someone copies that finished run into the namespace a run with another lr will look in
    run = _run(root, model, lr=2e-3)
    data_hash = storage.read_json(data / "data_card.json")["content_hash"]
    target = checkpoints.choose_namespace(run, "pipeline-run-3", data_hash, layers).path
    local = storage.localize(done["checkpoints"], tmp_path / "copied")
    storage.upload_dir(local, target)
    with caplog.at_level("WARNING", logger="fora"):
        got = run_training(run, data, layers, f"s3://{BUCKET}/out/e", run_key="pipeline-run-3")
    assert got["steps_run"] == 4 and got["resumed_from_step"] == 0 and got["checkpoints"] != target
    assert "belong to another run" in caplog.text
    assert not _same(_weights(got, tmp_path), _weights(done, tmp_path))


def test_the_buckets_jobs_command_creates_its_bucket_and_is_idempotent(s3):
    """k8s/base/buckets-job.yaml's exact command, run against the real S3 server twice (a re-created Job), on a
    bucket that does not exist yet (tests/test_storage_tenancy.py runs it with a Kubeflow profile's own keys)."""
    import subprocess

    import yaml
    from k8s_render import expand

    job = yaml.safe_load((Path(__file__).parents[1] / "k8s" / "base" / "buckets-job.yaml").read_text())
    for c in job["spec"]["template"]["spec"]["containers"]:
        arg = expand(c["args"][0], {"POD_NAMESPACE": "team-a"})
        bucket = arg.removeprefix("s3://").split("/")[0] + "-jobtest"
        uri = f"s3://{bucket}/{arg.removeprefix('s3://').split('/', 1)[1]}"
        command = [sys.executable if c["command"][0] == "python" else c["command"][0], *c["command"][1:]]
        for _ in range(2):
            out = subprocess.run([*command, uri], env=os.environ, capture_output=True, text=True)
            assert out.returncode == 0 and f"store ready: {uri}" in out.stdout, out.stderr
        assert bucket in {b["Name"] for b in s3.s3().list_buckets()["Buckets"]}
        assert storage.list_objects(uri) == []  # the write check's marker is gone
