"""The default storage layout against a real S3 server holding Kubeflow's per-namespace policy: SeaweedFS (``weed
mini`` with its IAM API writable) is given KFP's bucket, the ListBucket bucket policy and, for two profile
namespaces, identities with the user policy the profile controller creates (tests/fixtures/kfp/, copied verbatim
from kubeflow/pipelines sync.py). With a namespace's own keys the buckets Job's exact commands, the pipeline's
storage and its checkpoint, score-cache and serving-base paths all work under ``s3://mlpipeline/private/<ns>/``;
the other namespace's keys are refused there; the old default bucket is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from k8s_render import expand

from pipelines.config.run_config import load_run_config
from pipelines.runtime import storage

sys.path.insert(0, str(Path(__file__).parent / "cluster"))
from topology import Topology  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POLICIES = json.loads((Path(__file__).parent / "fixtures" / "kfp" / "profile_s3_policies.json").read_text())


@pytest.fixture(scope="module")
def tenants(tmp_path_factory):
    """The S3 server with KFP's bucket and policies; {namespace: its env (keys, endpoint, POD_NAMESPACE)}."""
    import boto3

    topo = Topology(root=tmp_path_factory.mktemp("s3-tenancy"))
    try:
        topo.start_s3("-s3.iam.readOnly=false")
        admin = topo.s3()
        admin.create_bucket(Bucket=POLICIES["bucket"])
        admin.put_bucket_policy(Bucket=POLICIES["bucket"], Policy=json.dumps(POLICIES["bucket_policy"]))
        iam = boto3.client("iam", endpoint_url=topo.s3_endpoint, aws_access_key_id=topo.access_key,
                           aws_secret_access_key=topo.secret_key, region_name="us-east-1")
        envs = {}
        for ns in (f"team-{uuid.uuid4().hex[:6]}", f"team-{uuid.uuid4().hex[:6]}"):
            iam.create_user(UserName=ns)  # the profile controller's create_access_key does this implicitly
            key = iam.create_access_key(UserName=ns)["AccessKey"]
            policy = json.dumps(POLICIES["user_policy"]).replace("NAMESPACE", ns)
            iam.put_user_policy(UserName=ns, PolicyName=f"KubeflowProject{ns}", PolicyDocument=policy)
            envs[ns] = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                        "AWS_ENDPOINT_URL": topo.s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1", "POD_NAMESPACE": ns}
        yield envs
    finally:
        topo.stop()


@pytest.fixture
def as_tenant(monkeypatch):
    def use(env: dict[str, str]) -> None:
        for var in ("AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(var, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    return use


def test_the_buckets_jobs_commands_pass_with_a_profiles_own_keys_twice(tenants):
    job = next(d for d in yaml.safe_load_all((ROOT / "k8s" / "base" / "buckets-job.yaml").read_text()))
    for ns, env in tenants.items():
        for c in job["spec"]["template"]["spec"]["containers"]:
            arg = expand(c["args"][0], {"POD_NAMESPACE": ns})  # the kubelet's $(VAR) expansion
            assert arg.startswith(f"s3://mlpipeline/private/{ns}/")
            command = [sys.executable, *c["command"][1:]]
            for _ in range(2):
                out = subprocess.run([*command, arg], env={**os.environ, **env}, capture_output=True, text=True)
                assert out.returncode == 0 and f"store ready: {arg}" in out.stdout, out.stderr


def test_the_cluster_configs_storage_is_the_namespaces_own_and_works(tenants, as_tenant, tmp_path):
    (ns, env), _ = tenants.items()
    as_tenant(env)
    run = load_run_config(ROOT / "configs" / "cluster.yaml")
    prefix = f"s3://mlpipeline/private/{ns}/fora-pipelines"
    assert run.storage.uri == prefix
    assert run.serve.artifacts_destination == f"{prefix}/mlflow-artifacts"
    assert run.checkpoint_dir.startswith(prefix + "/")
    from pipelines.evaluation.score_cache import cache_location

    assert str(cache_location(run.eval.cache, run.storage.uri)).startswith(prefix + "/")
    storage.ensure_prefix(run.storage.uri)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "adapter.safetensors").write_bytes(os.urandom(2048))
    target = storage.join(run.checkpoint_dir, "run-1", "step-2")
    storage.upload_dir(folder, target)
    assert [k for k, _, _ in storage.list_objects(target)] == ["adapter.safetensors"]
    back = tmp_path / "back"
    storage.download_dir(target, back)
    assert (back / "adapter.safetensors").read_bytes() == (folder / "adapter.safetensors").read_bytes()


def test_another_namespaces_keys_are_refused_in_one_line(tenants, as_tenant):
    (ns_a, env_a), (ns_b, env_b) = tenants.items()
    as_tenant({**env_b, "POD_NAMESPACE": ns_b})
    other = f"s3://mlpipeline/private/{ns_a}/fora-pipelines"
    with pytest.raises(storage.StorageError) as err:
        storage.ensure_prefix(other)
    assert "\n" not in str(err.value) and "mlpipeline" in str(err.value) and "refused" in str(err.value)
    with pytest.raises(storage.StorageError):
        storage.list_objects(other)


def test_the_old_default_bucket_is_refused_with_a_profiles_keys(tenants, as_tenant):
    (ns, env), _ = tenants.items()
    as_tenant(env)
    with pytest.raises(storage.StorageError) as err:
        storage.ensure_prefix("s3://fora-pipelines/runs")  # main's default before the per-namespace layout
    assert "\n" not in str(err.value) and "fora-pipelines" in str(err.value)


def test_an_unresolved_namespace_is_one_line(monkeypatch):
    from pipelines.config import namespace

    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.delenv("FORA_NAMESPACE", raising=False)
    monkeypatch.setattr(namespace, "SERVICE_ACCOUNT_NAMESPACE", Path("/nonexistent/namespace"))
    run = load_run_config(ROOT / "configs" / "cluster.yaml")
    assert "{namespace}" in run.storage.uri  # valid to validate on a laptop; refused where used
    with pytest.raises(storage.StorageError, match="POD_NAMESPACE"):
        storage.ensure_prefix(run.storage.uri)
    monkeypatch.setenv("FORA_NAMESPACE", "team-x")
    assert load_run_config(ROOT / "configs" / "cluster.yaml").storage.uri == "s3://mlpipeline/private/team-x/fora-pipelines"
