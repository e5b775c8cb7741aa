"""The deployment model (pipelines/cluster_model): its NetworkPolicy and RBAC evaluators against the examples of the
Kubernetes documentation (independent references with known outcomes), then the table of every pod we cause
against the **rendered** k8s/ for both overlays and a namespace that appears nowhere in the repo, with and without
each optional component: no needed edge shut, no edge or grant broader than the table. Each finding of the
deployment review is reintroduced into a render and must be caught."""

from __future__ import annotations

import copy
import itertools
import uuid
from pathlib import Path

import pytest
from k8s_render import K8S, overlay, render_with_any

from pipelines.cluster_model import rbac
from pipelines.cluster_model.check import check
from pipelines.cluster_model.network import Cluster, Endpoint
from pipelines.cluster_model.selectors import matches

ROOT = Path(__file__).resolve().parent.parent
SPECS = [ROOT / "pipelines" / "kubeflow" / "fora_pipeline.yaml", ROOT / "pipelines" / "kubeflow" / "fora_sweep_pipeline.yaml"]
OPTIONAL = ("raycluster", "serving", "mlflow-postgres", "pull-secret")


def _pod(name, ns, labels, ports=((6379, "TCP", ""),)):
    return Endpoint(name, "pod", f"10.9.{len(name)}.{len(ns)}", ns, labels, tuple(ports))


# -- the evaluators against the Kubernetes documentation's own examples ----------------------------------------------

DOCS_EXAMPLE = {  # "Network Policies" concept page, the "test-network-policy" example, verbatim
    "metadata": {"name": "test-network-policy", "namespace": "default"},
    "spec": {"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Ingress", "Egress"],
             "ingress": [{"from": [{"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                                   {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                                   {"podSelector": {"matchLabels": {"role": "frontend"}}}],
                          "ports": [{"protocol": "TCP", "port": 6379}]}],
             "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"protocol": "TCP", "port": 5978}]}]}}


def test_the_documentations_example_policy_admits_exactly_what_the_page_says():
    cluster = Cluster({"default": {}, "myproject-ns": {"project": "myproject"}, "other": {}}, [DOCS_EXAMPLE])
    db = _pod("db", "default", {"role": "db"})
    frontend = _pod("frontend", "default", {"role": "frontend"})
    anyone_in_project = _pod("x", "myproject-ns", {})
    frontend_elsewhere = _pod("frontend2", "other", {"role": "frontend"})  # podSelector alone: own namespace only
    outside_ok = Endpoint("ext", "external", "172.17.0.9")
    outside_excepted = Endpoint("ext2", "external", "172.17.1.9")
    assert cluster.allows(frontend, db, 6379)
    assert cluster.allows(anyone_in_project, db, 6379)
    assert cluster.allows(outside_ok, db, 6379)
    assert not cluster.allows(outside_excepted, db, 6379)
    assert not cluster.allows(frontend_elsewhere, db, 6379)
    assert not cluster.allows(frontend, db, 6380)  # other ports stay shut
    assert not cluster.allows(frontend, db, 6379, "UDP")
    assert cluster.allows(db, Endpoint("svc", "external", "10.0.0.7"), 5978)
    assert not cluster.allows(db, Endpoint("svc", "external", "10.0.1.7"), 5978)
    assert not cluster.allows(db, frontend, 6379)  # egress is isolated: only the one rule
    assert cluster.allows(frontend, anyone_in_project, 6379)  # neither is selected: not isolated


def test_and_versus_or_of_namespace_and_pod_selectors_as_the_documentation_explains():
    both = {"metadata": {"name": "and", "namespace": "db"}, "spec": {"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"user": "alice"}}, "podSelector": {"matchLabels": {"role": "client"}}}]}]}}
    either = copy.deepcopy(both)
    either["metadata"]["name"] = "or"
    either["spec"]["ingress"][0]["from"] = [{"namespaceSelector": {"matchLabels": {"user": "alice"}}},
                                            {"podSelector": {"matchLabels": {"role": "client"}}}]
    namespaces = {"db": {}, "alice": {"user": "alice"}}
    target = _pod("t", "db", {})
    alice_client, alice_other = _pod("c", "alice", {"role": "client"}), _pod("o", "alice", {})
    local_client = _pod("l", "db", {"role": "client"})
    a = Cluster(namespaces, [both])
    assert a.allows(alice_client, target, 1) and not a.allows(alice_other, target, 1) and not a.allows(local_client, target, 1)
    o = Cluster(namespaces, [either])
    assert o.allows(alice_client, target, 1) and o.allows(alice_other, target, 1) and o.allows(local_client, target, 1)


def test_default_deny_named_ports_end_ports_and_policy_types():
    deny = {"metadata": {"name": "deny", "namespace": "n"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    web = _pod("web", "n", {"app": "web"}, [(8080, "TCP", "http")])
    client = _pod("client", "n", {"app": "client"})
    assert not Cluster({"n": {}}, [deny]).allows(client, web, 8080)
    named = {"metadata": {"name": "named", "namespace": "n"}, "spec": {"podSelector": {"matchLabels": {"app": "web"}},
             "ingress": [{"ports": [{"port": "http"}]}]}}
    c = Cluster({"n": {}}, [named])
    assert c.allows(client, web, 8080) and not c.allows(client, web, 8081)
    ranged = {"metadata": {"name": "r", "namespace": "n"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"],
              "egress": [{"ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}]}}
    r = Cluster({"n": {}}, [ranged])
    ext = Endpoint("e", "external", "1.2.3.4")
    assert r.allows(client, ext, 32000) and r.allows(client, ext, 32768) and not r.allows(client, ext, 32769)
    # a policy with an egress section and no policyTypes isolates both directions (the API server's defaulting)
    implicit = {"metadata": {"name": "i", "namespace": "n"}, "spec": {"podSelector": {}, "egress": []}}
    assert not Cluster({"n": {}}, [implicit]).allows(client, web, 8080)


def test_ipblock_matches_a_node_under_calico_and_never_under_cilium():
    policy = {"metadata": {"name": "p", "namespace": "n"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"],
              "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 6443}]}]}}
    node = Endpoint("apiserver", "host", "10.0.0.10")
    pod = _pod("p", "n", {})
    c = Cluster({"n": {}}, [policy])
    assert c.allows(pod, node, 6443, cni="calico") and not c.allows(pod, node, 6443, cni="cilium")


def test_label_selector_expressions():
    labels = {"app": "a", "tier": "db"}
    assert matches({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db", "cache"]}]}, labels)
    assert matches({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, labels)
    assert not matches({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, labels)
    assert matches({"matchLabels": {"app": "a"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}, labels)
    assert not matches({"matchLabels": {"app": "a", "x": "y"}}, labels)


def test_rbac_resource_names_wildcards_and_binding_namespace():
    role = {"kind": "Role", "metadata": {"name": "r", "namespace": "a"}, "rules": [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["one"], "verbs": ["get"]},
        {"apiGroups": ["x.io"], "resources": ["*"], "verbs": ["list"]}]}
    binding = {"kind": "RoleBinding", "metadata": {"name": "b", "namespace": "a"},
               "roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "sa"}]}
    docs = [role, binding]
    assert rbac.allowed(docs, "a", "sa", rbac.Request("get", "", "secrets", "one"))
    assert not rbac.allowed(docs, "a", "sa", rbac.Request("get", "", "secrets", "two"))
    assert not rbac.allowed(docs, "a", "sa", rbac.Request("list", "", "secrets"))
    assert rbac.allowed(docs, "a", "sa", rbac.Request("list", "x.io", "anything"))
    assert not rbac.allowed(docs, "b", "sa", rbac.Request("get", "", "secrets", "one"))  # other namespace's account
    assert not rbac.allowed(docs, "a", "other", rbac.Request("get", "", "secrets", "one"))


# -- the table against the renders -------------------------------------------------------------------------------------

def _render(tmp_path: Path, ns: str, components) -> list[dict]:
    return render_with_any(overlay(tmp_path, ns, list(components)))


def _findings(docs, ns, profile=True):
    return [str(f) for f in check(docs, ns, SPECS, profile=profile)]


@pytest.mark.parametrize("components", [c for n in range(len(OPTIONAL) + 1) for c in itertools.combinations(OPTIONAL, n)],
                         ids=lambda c: "+".join(c) or "base")
@pytest.mark.parametrize("layout", ["profile", "standalone"])
def test_the_model_finds_nothing_in_any_combination_of_components(tmp_path, components, layout):
    # a profile namespace whose name appears nowhere in the repository, or KFP's own (standalone: KFP's pods share it)
    ns = f"team-{uuid.uuid4().hex[:8]}" if layout == "profile" else "kubeflow"
    assert _findings(_render(tmp_path, ns, components), ns, profile=layout == "profile") == []


@pytest.mark.parametrize("layout", ["standalone", "profile"])
def test_the_model_finds_nothing_in_the_shipped_overlays_with_everything_and_a_rayjob(tmp_path, layout):
    import yaml

    shipped = yaml.safe_load((K8S / "overlays" / layout / "kustomization.yaml").read_text())
    ns = shipped["namespace"]
    docs = _render(tmp_path, ns, OPTIONAL)
    docs += [{**d, "metadata": {**d["metadata"], "namespace": ns}} for d in render_with_any(K8S / "rayjob")]
    assert _findings(docs, ns, profile=layout == "profile") == []


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    ns = "team-mutants"
    return ns, render_with_any(overlay(tmp_path_factory.mktemp("m"), ns, ["raycluster", "serving"]))


def _policy(docs, name):
    return next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name)


def _caught(docs, ns, *fragments):
    found = _findings(docs, ns)
    for fragment in fragments:
        assert any(fragment in f for f in found), (fragment, found[:5])


def test_caught_step_pods_that_reach_the_api_server_on_443_only(full):
    ns, docs = full
    docs = copy.deepcopy(docs)
    steps = _policy(docs, "fora-pipeline-steps")["spec"]["egress"]
    steps[-1] = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]}  # main's rule
    _caught(docs, ns, "step fora_pipeline/train -> kube-apiserver (kubeadm, kind, k3s, OpenShift):6443/TCP is shut")


def test_caught_an_inference_service_labelled_for_the_default_deny(full, monkeypatch):
    from pipelines.serving import inference_service

    ns, docs = full
    monkeypatch.setattr(inference_service, "LABELS", {"app.kubernetes.io/part-of": "fora-pipelines",
                                                      "app.kubernetes.io/component": "serving"})
    _caught(docs, ns, "istio-ingressgateway -> KServe predictor:8080/TCP is shut",
            "KServe predictor -> seaweedfs:8333/TCP is shut")


def test_caught_mlflow_without_https_to_s3(full):
    ns, docs = full
    docs = copy.deepcopy(docs)
    _policy(docs, "mlflow")["spec"]["egress"].pop()
    _caught(docs, ns, "Deployment mlflow -> S3 over HTTPS (AWS, Ceph RGW with TLS):443/TCP is shut")


def test_caught_dns_only_to_kube_system(full):
    ns, docs = full
    docs = copy.deepcopy(docs)
    _policy(docs, "fora-egress-dns")["spec"]["egress"] = [{"to": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "kube-system"}}}], "ports": [{"protocol": "UDP", "port": 53},
                                                                      {"protocol": "TCP", "port": 53}]}]
    _caught(docs, ns, "-> node-local-dns:53/UDP is shut", "-> openshift-dns:5353/UDP is shut")


def test_caught_grants_and_edges_broader_than_the_table(full):
    ns, docs = full
    docs = copy.deepcopy(docs)
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "fora-pipeline")
    role["rules"][-1]["resourceNames"] = []  # every Secret of the namespace
    role["rules"].append({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]})
    _policy(docs, "mlflow")["spec"]["egress"].append({"ports": [{"protocol": "TCP", "port": 5432}]})  # main's base
    _policy(docs, "mlflow")["spec"]["ingress"][0]["from"] = [{"namespaceSelector": {}}]
    _caught(docs, ns, "fora-pipeline: Role fora-pipeline grants get core/secrets, which no row needs",
            "fora-pipeline: Role fora-pipeline grants * core/pods",
            "Deployment mlflow -> postgres (in the cluster):5432/TCP is open and no row needs it",
            "pod of another namespace -> Deployment mlflow:5000/TCP is open")


def test_caught_a_refused_api_call_and_a_needless_token(full):
    ns, docs = full
    docs = copy.deepcopy(docs)
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "fora-pipeline")
    role["rules"] = [r for r in role["rules"] if r["resources"] != ["workflowtaskresults"]]
    mlflow = next(d for d in docs if d["kind"] == "Deployment")
    mlflow["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    _caught(docs, ns, "fora-pipeline: create argoproj.io/workflowtaskresults is refused",
            "Deployment mlflow mounts the API token")


def test_fora_cluster_check_on_a_users_overlay(tmp_path, capsys):
    """A platform engineer's overlay that "tightens" the steps' egress to 443 is caught before it is applied."""
    import yaml

    from pipelines import cli

    folder = overlay(tmp_path, "team-check", ["raycluster"])
    assert cli.main(["cluster-check", str(folder)]) == 0
    assert "no needed edge shut" in capsys.readouterr().out
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    k["patches"] = [{"target": {"kind": "NetworkPolicy", "name": "fora-pipeline-steps"}, "patch": yaml.safe_dump([
        {"op": "replace", "path": "/spec/egress/2/ports", "value": [{"protocol": "TCP", "port": 443}]}])}]
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(k))
    assert cli.main(["cluster-check", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "kube-apiserver (kubeadm, kind, k3s, OpenShift):6443/TCP is shut" in out and "Argo's wait container" in out
    assert cli.main(["cluster-check", str(tmp_path / "nowhere")]) == 2  # one line, no traceback
    assert "no kustomization.yaml" in capsys.readouterr().err


# -- who applies it: a profile owner (kubeflow-admin) ------------------------------------------------------------------

def _kubeflow_admin_rules() -> list[dict]:
    import yaml

    from pipelines.cluster_model.applier import aggregated_rules

    roles = [d for p in sorted((ROOT / "tests" / "fixtures" / "kubeflow_roles").glob("*.yaml"))
             for d in yaml.safe_load_all(p.read_text()) if d and d.get("kind") == "ClusterRole"]
    return aggregated_rules(roles, "kubeflow-admin")


def test_a_profile_owner_can_apply_the_profile_overlay_with_every_component(tmp_path):
    from pipelines.cluster_model.applier import apply_findings

    rules = _kubeflow_admin_rules()
    assert rules  # the aggregation found the application roles
    docs = _render(tmp_path, "team-owner", OPTIONAL)
    docs += [{**d, "metadata": {**d["metadata"], "namespace": "team-owner"}} for d in render_with_any(K8S / "rayjob")]
    assert list(apply_findings(docs, rules, "the profile owner")) == []


def test_the_applier_check_catches_an_escalating_role_and_a_kind_it_may_not_create(tmp_path):
    from pipelines.cluster_model.applier import apply_findings

    rules = _kubeflow_admin_rules()
    docs = copy.deepcopy(_render(tmp_path, "team-owner", []))
    role = next(d for d in docs if d["kind"] == "Role")
    role["rules"].append({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]})  # cluster-scoped: not held
    docs.append({"kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "team-owner"}})
    found = list(apply_findings(docs, rules, "the profile owner"))
    assert any("grants get core/nodes" in f and "escalation" in f for f in found), found
    assert any("ResourceQuota q" in f for f in found), found
