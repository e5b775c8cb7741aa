"""The table: what each of our pods must reach (``EDGES``) and may do on the Kubernetes API (``API``), each row
with its reason and the upstream file it comes from. ``when`` names the optional part of the render a row
depends on (``raycluster``, ``serving``, ``postgres``: ``features`` reads them from the render).

``scope`` says how much a NetworkPolicy may open for the row without being broader than the table, because a
NetworkPolicy cannot name the thing itself: ``these`` (only the named endpoints), ``namespace`` (any pod of the
endpoint's namespace on that port: KFP's services, whose pod labels differ between KFP releases), ``anywhere``
(any address on that port: DNS, whose server differs per cluster; the API server, a host-network process
whose address NetworkPolicy cannot name; HTTPS to S3 and the model hub; PostgreSQL wherever the user runs it),
``cluster`` (any port of a pod of the same Ray cluster: GCS, object manager and worker ports are assigned at
run time).
"""

from __future__ import annotations

from dataclasses import dataclass

from .rbac import Request

DNS = (("coredns", 53), ("node-local-dns", 53), ("openshift-dns", 5353))
API_SERVERS = (("kube-apiserver (kubeadm, kind, k3s, OpenShift)", 6443), ("kube-apiserver (GKE, EKS, AKS)", 443))
HTTPS = ("S3 over HTTPS (AWS, Ceph RGW with TLS)", "model hub (huggingface.co)")
S3_IN_KFP = "seaweedfs"

DNS_WHY = "resolve Service names (CoreDNS; NodeLocal DNSCache; OpenShift's resolver listens on 5353)"
DNS_SRC = ("kubernetes cluster/addons/dns/nodelocaldns/nodelocaldns.yaml; openshift/cluster-dns-operator "
           "assets/dns/daemonset.yaml")
ARGO_WAIT = "argoproj/argo-workflows docs/workflow-rbac.md (the wait container's WorkflowTaskResult)"
KFP_LAUNCHER = ("kubeflow/pipelines backend/src/v2/component/launcher_v2.go (its pod), backend/src/v2/config/env.go "
                "(the kfp-launcher ConfigMap), backend/src/v2/objectstore/object_store.go (the artifact Secret)")


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    port: int
    protocol: str
    scope: str
    why: str
    source: str
    when: str = ""


@dataclass(frozen=True)
class ApiNeed:
    account: str
    request: Request
    why: str
    source: str
    when: str = ""


def _dns(role: str) -> list[Edge]:
    return [Edge(role, dst, port, proto, "anywhere", DNS_WHY, DNS_SRC)
            for dst, port in DNS for proto in ("UDP", "TCP")]


def _s3(role: str, why: str) -> list[Edge]:
    return [Edge(role, S3_IN_KFP, 8333, "TCP", "namespace", f"{why}: KFP's SeaweedFS (KFP >= 2.16)",
                 "kubeflow/pipelines manifests/kustomize/third-party/seaweedfs/base/seaweedfs/seaweedfs-service.yaml "
                 "(port 9000 is a Service port onto 8333)"),
            Edge(role, "minio (KFP < 2.16)", 9000, "TCP", "namespace", f"{why}: KFP's MinIO before 2.16",
                 "kubeflow/pipelines manifests/kustomize/third-party/minio"),
            Edge(role, HTTPS[0], 443, "TCP", "anywhere", f"{why}: an S3 outside the cluster over HTTPS",
                 "k8s/base/services-configmap.yaml (AWS_ENDPOINT_URL may be https://)")]


def _https(role: str) -> list[Edge]:
    return [Edge(role, HTTPS[1], 443, "TCP", "anywhere", "a model or dataset from the hub (hf:// or a hub id)",
                 "huggingface_hub")]


STEP = [
    *_dns("step"),
    *[Edge("step", dst, port, "TCP", "anywhere", "Argo's wait container writes the step's WorkflowTaskResult; KFP's "
           "launcher reads its pod, the kfp-launcher ConfigMap and the artifact Secret", f"{ARGO_WAIT}; {KFP_LAUNCHER}")
      for dst, port in API_SERVERS],
    Edge("step", "ml-pipeline", 8887, "TCP", "namespace", "KFP's launcher and driver call the API server over gRPC "
         "(nothing of ours uses its HTTP port 8888)", "kubeflow/pipelines backend/src/v2/cmd/launcher-v2/main.go "
         "(ml_pipeline_server_port 8887), backend/src/v2/config/env.go"),
    Edge("step", "metadata-grpc", 8080, "TCP", "namespace", "KFP's launcher records executions in ML Metadata",
         "kubeflow/pipelines backend/src/v2/metadata/env.go (metadataGrpcServicePort 8080)"),
    *_s3("step", "KFP's launcher moves artifacts; storage.uri"),
    *_https("step"),
    Edge("step", "Deployment mlflow", 5000, "TCP", "these", "tracking and the registry", "configs/cluster.yaml"),
    Edge("step", "RayCluster fora-ray head", 8265, "TCP", "these", "train and sweep submit Ray jobs (Jobs API)",
         "pipelines/runtime/ray_jobs.py", when="raycluster"),
]

MLFLOW = [
    *_dns("mlflow"),
    *_s3("mlflow", "MLflow proxies artifacts to --artifacts-destination"),
    Edge("mlflow", "postgres (managed, outside the cluster)", 5432, "TCP", "anywhere", "its stores on PostgreSQL",
         "k8s/components/mlflow-postgres", when="postgres"),
    Edge("mlflow", "postgres (in the cluster)", 5432, "TCP", "anywhere", "its stores on PostgreSQL",
         "k8s/components/mlflow-postgres", when="postgres"),
]

SETUP = [*_dns("setup"), *_s3("setup", "the fora-buckets Job checks and creates buckets")]

RAY = [
    *_dns("ray"),
    Edge("ray", "same-cluster", 0, "TCP", "cluster", "GCS, object manager, raylets and workers talk to each other",
         "ray-project/ray python/ray/_private/ray_constants.py (ports assigned at run time)"),
    Edge("ray", "Deployment mlflow", 5000, "TCP", "these", "the job logs training metrics to MLflow",
         "pipelines/runtime/tracking.py"),
    *_s3("ray", "staged inputs, checkpoints, the adapter"),
    *_https("ray"),
]

USER = [
    Edge("our-namespace", "Deployment mlflow", 5000, "TCP", "these", "people and notebooks of the namespace read the registry",
         "docs/kubeflow.md 'Security model'"),
    Edge("our-namespace", "RayCluster fora-ray head", 8265, "TCP", "these", "people of the namespace submit Ray jobs",
         "docs/kubeflow.md 'Security model'", when="raycluster"),
]

SUBMITTER = [Edge("ray-submitter", "head", 8265, "TCP", "cluster", "KubeRay's submitter runs `ray job submit`",
                  "ray-project/kuberay ray-operator/controllers/ray/rayjob_controller.go")]

PREDICTOR = [
    *_dns("predictor"),
    *_s3("predictor", "KServe's storage initializer downloads the model"),
    *_https("predictor"),
]

EDGES: list[Edge] = [*STEP, *MLFLOW, *SETUP, *RAY, *USER, *SUBMITTER, *PREDICTOR]

# Requests into our pods that come from outside the table's sources: KServe's ingress (Istio's gateway or Knative's
# activator) reaches the predictor (kserve/kserve pkg/controller/v1beta1/inferenceservice/components/predictor.go)
INGRESS = [
    Edge("istio-ingressgateway", "predictor", 8080, "TCP", "these", "requests to the InferenceService",
         "kserve/kserve config/runtimes/kserve-huggingfaceserver.yaml (port 8080)", when="serving"),
    Edge("knative-activator", "predictor", 8012, "TCP", "these", "serverless mode: Knative's queue-proxy",
         "knative/serving pkg/apis/serving/k8s_validation.go (queue-proxy 8012)", when="serving"),
]

PIPELINE_ACCOUNT = "fora-pipeline"
API: list[ApiNeed] = [
    ApiNeed(PIPELINE_ACCOUNT, Request("create", "argoproj.io", "workflowtaskresults"), "Argo's wait container", ARGO_WAIT),
    ApiNeed(PIPELINE_ACCOUNT, Request("patch", "argoproj.io", "workflowtaskresults"), "Argo's wait container", ARGO_WAIT),
    ApiNeed(PIPELINE_ACCOUNT, Request("get", "", "pods"), "KFP's driver and launcher read their own pod",
            "kubeflow/pipelines backend/src/v2/driver/k8s.go, backend/src/v2/component/launcher_v2.go"),
    ApiNeed(PIPELINE_ACCOUNT, Request("get", "", "configmaps", "kfp-launcher"), "KFP's launcher: the artifact store's "
            "settings", "kubeflow/pipelines backend/src/v2/config/env.go"),
    ApiNeed(PIPELINE_ACCOUNT, Request("get", "", "secrets", "mlpipeline-minio-artifact"), "KFP's launcher: the artifact "
            "store's keys", "kubeflow/pipelines backend/src/v2/objectstore/object_store.go"),
    *[ApiNeed(PIPELINE_ACCOUNT, Request(verb, "serving.kserve.io", "inferenceservices"), "the deploy step applies the "
              "champion's InferenceService", "pipelines/serving/deploy.py", when="serving")
      for verb in ("get", "create", "update")],
]


def features(docs: list[dict]) -> set[str]:
    """The optional parts present in a render: raycluster, serving, postgres."""
    found = set()
    if any(d["kind"] == "RayCluster" for d in docs):
        found.add("raycluster")
    if any(d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "fora-serving" for d in docs):
        found.add("serving")
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow":
            env = d["spec"]["template"]["spec"]["containers"][0].get("env", [])
            if any(e["name"] == "MLFLOW_BACKEND_STORE_URI" for e in env):
                found.add("postgres")
    return found
