"""Every pod fora-pipelines causes to exist, and the cluster around them, as endpoints of the network model
(``network.Endpoint``), built from the **rendered** manifests and the compiled pipeline specs. The labels are the
ones the pod will carry: ours from the render or the compiled spec, plus what the controller that creates the pod
adds, each cited below.

Pods of ours (``Pod.ours``; ``governed``: selected by our NetworkPolicies by design):

* KFP step pods, one per executor of each compiled spec: ``podMetadata.labels`` of the spec's kubernetes
  platform config (KFP's driver copies them into the executor pod), plus Argo's ``workflows.argoproj.io/workflow``
  and ``/completed`` (argo-workflows ``workflow/common/common.go``) and KFP's
  ``pipelines.kubeflow.org/v2_component`` (kubeflow/pipelines ``backend/src/cache/server/mutation.go``). Inside
  run Argo's wait container and KFP's launcher; the account is the run's (``fora submit --service-account
  fora-pipeline``).
* the MLflow Deployment's pod and the ``fora-buckets`` Job's pod: their templates' labels.
* KubeRay head and worker pods of a RayCluster (and of a RayJob's cluster): the template's labels plus KubeRay's
  ``labelPod`` (``ray.io/is-ray-node``, ``ray.io/cluster``, ``ray.io/node-type``, ``ray.io/group``,
  ``ray.io/identifier``, ``app.kubernetes.io/name: kuberay``, ``app.kubernetes.io/created-by:
  kuberay-operator``; ray-project/kuberay ``ray-operator/controllers/ray/common/pod.go``); a RayJob's submitter:
  its template's labels plus ``ray.io/originated-from-cr-name`` and ``-crd`` (``rayjob_controller.go``).
* KServe's predictor pod of the InferenceService the deploy step renders (``pipelines/serving/inference_service``):
  the InferenceService's labels, plus ``serving.kserve.io/inferenceservice`` and ``component: predictor``
  (kserve/kserve ``pkg/controller/v1beta1/inferenceservice/components/predictor.go``, buildObjectMeta: the
  runtime's, the InferenceService's and the predictor's labels, unioned).

The rest of the world: KFP's services in ``kubeflow`` (ml-pipeline 8887/8888, metadata-grpc 8080, SeaweedFS 8333
with KFP's own NetworkPolicy, MinIO 9000 before KFP 2.16), DNS as clusters run it (CoreDNS pods in
``kube-system`` on 53; NodeLocal DNSCache on the node's link-local 169.254.20.10:53, kubernetes
``cluster/addons/dns/nodelocaldns/nodelocaldns.yaml``; OpenShift's CoreDNS in ``openshift-dns`` on 5353,
openshift/cluster-dns-operator ``assets/dns/daemonset.yaml``), the API server (host network on 6443 on kubeadm,
kind, k3s/RKE2 and OpenShift: kubeadm's ``DefaultAPIServerBindPort``; 443 on an address outside the cluster on
GKE/EKS/AKS), an S3 and the model hub over HTTPS, a PostgreSQL outside the cluster and one in it, a user's
notebook in our namespace, a pod of another namespace, Istio's ingress gateway and Knative's activator.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import yaml

from .network import Endpoint

KFP_NAMESPACE = "kubeflow"
UPSTREAM = Path(__file__).with_name("upstream")
PROFILE_LABELS = {"app.kubernetes.io/part-of": "kubeflow-profile", "istio-injection": "enabled",
                  "pipelines.kubeflow.org/enabled": "true"}  # what the profile controllers put on a profile namespace
OTHER_NAMESPACES = {KFP_NAMESPACE: {}, "kube-system": {}, "openshift-dns": {}, "istio-system": {},
                    "knative-serving": {}, "ray-system": {}, "databases": {},
                    "team-other": dict(PROFILE_LABELS)}


@dataclass(eq=False)
class Pod(Endpoint):
    """An endpoint that is a pod we cause: ``role`` groups pods with the same needs; ``account`` its ServiceAccount
    ('' without an API token); ``governed``: our NetworkPolicies are meant to select it."""

    role: str = ""
    account: str = ""
    governed: bool = False
    secrets: frozenset[str] = frozenset()
    cluster: str = ""


_ips = (f"10.244.{i // 250}.{i % 250 + 2}" for i in itertools.count())


def _pod(name: str, namespace: str, labels: dict, ports=(), **kw) -> Pod:
    return Pod(name=name, kind="pod", ip=next(_ips), namespace=namespace, labels={k: str(v) for k, v in labels.items()},
               ports=tuple(ports), **kw)


def _template_ports(template: dict) -> list[tuple[int, str, str]]:
    return [(p["containerPort"], p.get("protocol", "TCP"), p.get("name", ""))
            for c in template["spec"].get("containers", []) for p in c.get("ports", [])]


def _account(template: dict) -> str:
    spec = template["spec"]
    return "" if spec.get("automountServiceAccountToken") is False else spec.get("serviceAccountName", "default")


def step_pods(namespace: str, specs: list[Path], account: str = "fora-pipeline") -> list[Pod]:
    """One pod per executor of each compiled pipeline spec."""
    pods = []
    for path in specs:
        docs = list(yaml.safe_load_all(path.read_text()))
        executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for name, ex in executors.items():
            labels = {**ex.get("podMetadata", {}).get("labels", {}), "workflows.argoproj.io/workflow": "fora-run-x",
                      "workflows.argoproj.io/completed": "false", "pipelines.kubeflow.org/v2_component": "true"}
            secrets = {s["secretName"] for s in ex.get("secretAsEnv", [])}
            pods.append(_pod(f"step {path.stem}/{name.removeprefix('exec-')}", namespace, labels, role="step", governed=True,
                             account=account, secrets=frozenset(secrets)))
    return pods


def kuberay_labels(template_labels: dict, cluster: str, node_type: str, group: str) -> dict:
    return {**template_labels, "ray.io/is-ray-node": "yes", "ray.io/cluster": cluster, "ray.io/node-type": node_type,
            "ray.io/group": group, "ray.io/identifier": f"{cluster}-{node_type}", "app.kubernetes.io/name": "kuberay",
            "app.kubernetes.io/created-by": "kuberay-operator"}


RAY_HEAD_PORTS = ((6379, "TCP", "gcs"), (8265, "TCP", "dashboard"), (10001, "TCP", "client"),
                  (52365, "TCP", "dashboard-agent"), (8080, "TCP", "metrics"))
RAY_WORKER_PORTS = ((10002, "TCP", ""), (52365, "TCP", "dashboard-agent"), (8080, "TCP", "metrics"))


def ray_pods(doc: dict, namespace: str) -> list[Pod]:
    """Head, one worker per group and, for a RayJob, the submitter."""
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    rayjob = doc["kind"] == "RayJob"
    cluster = f"{doc['metadata']['name']}-abcde" if rayjob else doc["metadata"]["name"]
    head = spec["headGroupSpec"]["template"]
    pods = [_pod(f"{doc['kind']} {doc['metadata']['name']} head", namespace,
                 kuberay_labels(head.get("metadata", {}).get("labels", {}), cluster, "head", "headgroup"),
                 RAY_HEAD_PORTS, role="ray", account=_account(head), governed=not rayjob, cluster=cluster)]
    for group in spec["workerGroupSpecs"]:
        t = group["template"]
        pods.append(_pod(f"{doc['kind']} {doc['metadata']['name']} worker {group['groupName']}", namespace,
                         kuberay_labels(t.get("metadata", {}).get("labels", {}), cluster, "worker", group["groupName"]),
                         RAY_WORKER_PORTS, role="ray", account=_account(t), governed=not rayjob, cluster=cluster))
    if rayjob:
        t = doc["spec"].get("submitterPodTemplate", {"spec": {}})
        labels = {**t.get("metadata", {}).get("labels", {}), "ray.io/originated-from-cr-name": doc["metadata"]["name"],
                  "ray.io/originated-from-crd": "RayJob", "app.kubernetes.io/created-by": "kuberay-operator"}
        pods.append(_pod(f"RayJob {doc['metadata']['name']} submitter", namespace, labels, role="ray-submitter",
                         account=_account(t), governed=False, cluster=cluster))
    return pods


def predictor_pod(namespace: str) -> Pod:
    """KServe's predictor pod of the InferenceService the deploy step would create."""
    from ..config.serve import ServeConfig
    from ..serving.inference_service import render

    isvc = render(name="fora-model", namespace=namespace, serve=ServeConfig(), backend="vllm", model_name="fora-model",
                  version=1, merged_uri="s3://bucket/model")
    labels = {**isvc["metadata"]["labels"], **isvc["spec"]["predictor"].get("labels", {}),
              "serving.kserve.io/inferenceservice": isvc["metadata"]["name"], "component": "predictor"}
    return _pod("KServe predictor", namespace, labels, ((8080, "TCP", "http"), (8012, "TCP", "queue-port")),
                role="predictor", account="", governed=False)


def our_pods(docs: list[dict], namespace: str, specs: list[Path]) -> list[Pod]:
    """Every pod of ours a render (plus the compiled specs) causes."""
    pods = step_pods(namespace, specs)
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind in ("Deployment", "Job"):
            t = d["spec"]["template"]
            role = "mlflow" if name == "mlflow" else "setup"
            pods.append(_pod(f"{kind} {name}", namespace, t.get("metadata", {}).get("labels", {}), _template_ports(t),
                             role=role, account=_account(t), governed=True))
        elif kind in ("RayCluster", "RayJob"):
            pods += ray_pods(d, namespace)
    if any(d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "fora-serving" for d in docs):
        pods.append(predictor_pod(namespace))
    return pods


def world_endpoints(namespace: str) -> dict[str, Endpoint]:
    """The cluster around our pods (see the module doc), by name."""
    ns_user = _pod("notebook (a user's pod in our namespace)", namespace, {"notebook-name": "analysis"},
                   role="user", governed=False)
    pods = [
        _pod("ml-pipeline", KFP_NAMESPACE, {"app": "ml-pipeline"}, [(8887, "TCP", "grpc"), (8888, "TCP", "http")]),
        _pod("metadata-grpc", KFP_NAMESPACE, {"component": "metadata-grpc-server"}, [(8080, "TCP", "grpc-api")]),
        _pod("seaweedfs", KFP_NAMESPACE, {"app": "seaweedfs", "application-crd-id": "kubeflow-pipelines"},
             [(8333, "TCP", ""), (8111, "TCP", ""), (9333, "TCP", "")]),
        _pod("minio (KFP < 2.16)", KFP_NAMESPACE, {"app": "minio"}, [(9000, "TCP", "")]),
        _pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, [(53, "UDP", "dns"), (53, "TCP", "dns-tcp")]),
        _pod("openshift-dns", "openshift-dns", {"dns.operator.openshift.io/daemonset-dns": "default"},
             [(5353, "UDP", "dns"), (5353, "TCP", "dns-tcp")]),
        _pod("istio-ingressgateway", "istio-system", {"app": "istio-ingressgateway"}),
        _pod("knative-activator", "knative-serving", {"app": "activator"}),
        _pod("postgres (in the cluster)", "databases", {"app": "postgres"}, [(5432, "TCP", "")]),
        _pod("pod of another namespace", "team-other", {"app": "other"}, [(8080, "TCP", "")]),
        ns_user,
    ]
    out = {p.name: p for p in pods}
    for e in (Endpoint("node-local-dns", "host", "169.254.20.10", ports=((53, "UDP", ""), (53, "TCP", ""))),
              Endpoint("kube-apiserver (kubeadm, kind, k3s, OpenShift)", "host", "10.0.0.10",
                       ports=((6443, "TCP", ""), (10250, "TCP", ""))),
              Endpoint("kube-apiserver (GKE, EKS, AKS)", "external", "172.16.0.2", ports=((443, "TCP", ""),)),
              Endpoint("S3 over HTTPS (AWS, Ceph RGW with TLS)", "external", "52.216.0.10", ports=((443, "TCP", ""),)),
              Endpoint("model hub (huggingface.co)", "external", "18.239.0.10", ports=((443, "TCP", ""),)),
              Endpoint("postgres (managed, outside the cluster)", "external", "10.20.0.5", ports=((5432, "TCP", ""),)),
              Endpoint("internet", "external", "93.184.216.34", ports=((80, "TCP", ""), (22, "TCP", "")))):
        out[e.name] = e
    return out


def kfp_policies() -> list[dict]:
    """KFP's own NetworkPolicies in ``kubeflow`` (upstream/, with their source)."""
    docs = []
    for path in sorted(UPSTREAM.glob("kfp_*networkpolicy.yaml")):
        for d in yaml.safe_load_all(path.read_text()):
            d["metadata"]["namespace"] = KFP_NAMESPACE
            docs.append(d)
    return docs
