"""The table (``needs.py``) against a render: every needed edge that our NetworkPolicies (with KFP's own) shut, under
each network plugin's reading of ``ipBlock``; every edge they open that no row of the table needs; every needed API
request RBAC refuses and every grant no row needs; a pod with an API token it does not need, or without one it
needs. An empty list is a deployment the model cannot fault."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import rbac
from .needs import API, EDGES, INGRESS, Edge, features
from .network import CNIS, Cluster, Endpoint
from .pods import OTHER_NAMESPACES, PROFILE_LABELS, Pod, kfp_policies, our_pods, world_endpoints

OUR_NAMESPACE = "our-namespace"  # an Edge.src meaning any pod of the namespace the overlay sets


@dataclass(frozen=True)
class Finding:
    kind: str  # shut | broader | api-refused | api-broader | token
    text: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.text}"


@dataclass
class Model:
    """A render placed in the world: our pods, the other endpoints, the policies, the active rows."""

    docs: list[dict]
    namespace: str
    pods: list[Pod]
    world: dict[str, Endpoint]
    cluster: Cluster
    edges: list[Edge]

    @classmethod
    def of(cls, docs: list[dict], namespace: str, specs: list[Path], profile: bool = True) -> Model:
        names = {n: {**labels, "kubernetes.io/metadata.name": n} for n, labels in OTHER_NAMESPACES.items()}
        names[namespace] = {**names.get(namespace, {}), **(PROFILE_LABELS if profile else {}),
                            "kubernetes.io/metadata.name": namespace}
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"] + kfp_policies()
        found = features(docs)
        edges = [e for e in [*EDGES, *INGRESS] if not e.when or e.when in found]
        return cls(docs, namespace, our_pods(docs, namespace, specs), world_endpoints(namespace),
                   Cluster(names, policies), edges)

    def endpoints(self) -> list[Endpoint]:
        return [*self.pods, *self.world.values()]

    def sources(self, edge: Edge, coverage: bool = False) -> list[Endpoint]:
        """The endpoints a row starts from. ``our-namespace``: people's pods of the namespace (the notebook) for the
        needs; any pod of the namespace when judging whether an open edge is covered."""
        if edge.src == OUR_NAMESPACE:
            return [e for e in self.endpoints() if e.kind == "pod" and e.namespace == self.namespace
                    and (coverage or not isinstance(e, Pod) or e.role == "user")]
        return [p for p in self.pods if p.role == edge.src] + [e for e in self.world.values() if e.name == edge.src]

    def targets(self, edge: Edge, src: Endpoint) -> list[Endpoint]:
        cluster = getattr(src, "cluster", "")
        if edge.dst == "same-cluster":
            return [p for p in self.pods if p.cluster and p.cluster == cluster and p is not src]
        if edge.dst == "head":
            return [p for p in self.pods if p.cluster == cluster and p.labels.get("ray.io/node-type") == "head"]
        return [p for p in self.pods if p.role == edge.dst or p.name == edge.dst] + \
            [e for e in self.world.values() if e.name == edge.dst]


def _ports(edge: Edge, dst: Endpoint) -> list[int]:
    return [p for p, proto, _ in dst.ports if proto == edge.protocol] if edge.port == 0 else [edge.port]


def shut_edges(model: Model) -> Iterator[Finding]:
    """Needed edges a policy shuts, under any network plugin."""
    for edge in model.edges:
        sources = model.sources(edge)
        if not sources and edge.src not in ("istio-ingressgateway", "knative-activator"):
            continue
        for src in sources:
            targets = model.targets(edge, src)
            for dst in targets:
                for port in _ports(edge, dst):
                    shut = [cni for cni in CNIS if not model.cluster.allows(src, dst, port, edge.protocol, cni)]
                    if shut:
                        yield Finding("shut", f"{src.name} -> {dst.name}:{port}/{edge.protocol} is shut "
                                              f"({', '.join(shut)}): {edge.why} [{edge.source}]")


def _covered(model: Model, src: Endpoint, dst: Endpoint, port: int, protocol: str) -> bool:
    for edge in model.edges:
        if edge.protocol != protocol or edge.port not in (0, port):
            continue
        if src not in model.sources(edge, coverage=True):
            continue
        if edge.scope == "anywhere":
            return True
        if edge.scope == "namespace" and any(dst.namespace == t.namespace for t in model.targets(edge, src)):
            return True
        if dst in model.targets(edge, src):
            return True
    return False


def broader_edges(model: Model) -> Iterator[Finding]:
    """Edges into or out of a governed pod of ours that the policies open (Calico's reading, the widest) and
    no row of the table needs."""
    everything = model.endpoints()
    for src in everything:
        for dst in everything:
            if src is dst or not (getattr(src, "governed", False) or getattr(dst, "governed", False)):
                continue
            if src.kind != "pod" and dst.kind != "pod":
                continue
            for port, protocol, _ in dst.ports:
                if model.cluster.allows(src, dst, port, protocol, "calico") and not _covered(model, src, dst, port, protocol):
                    yield Finding("broader", f"{src.name} -> {dst.name}:{port}/{protocol} is open and no row needs it")


SAMPLE_NAME = "any-object-7f3a"


def api_findings(model: Model) -> Iterator[Finding]:
    """Needed API requests RBAC refuses; grants to our accounts no row needs; tokens where no row needs one."""
    found = features(model.docs)
    needs = [n for n in API if not n.when or n.when in found]
    for need in needs:
        req = need.request
        if not req.name and req.verb != "create":  # any object's name: a rule limited by resourceNames fails here
            req = rbac.Request(req.verb, req.group, req.resource, SAMPLE_NAME)
        if not rbac.allowed(model.docs, model.namespace, need.account, req):
            yield Finding("api-refused", f"{need.account}: {req} is refused: {need.why} [{need.source}]")
    accounts = {d["metadata"]["name"] for d in model.docs if d["kind"] == "ServiceAccount"} | {"default"}
    for account in sorted(accounts):
        for role, rule in rbac.bound_rules(model.docs, model.namespace, account):
            for grant in rbac.grants(rule):
                if not any(n.account == account and (n.request.verb, n.request.group, n.request.resource) ==
                           (grant.verb, grant.group, grant.resource) and n.request.name in ("", grant.name)
                           for n in needs):
                    yield Finding("api-broader", f"{account}: Role {role} grants {grant}, which no row needs")
    api_roles = {"step"}
    for pod in model.pods:
        if pod.governed and pod.role not in api_roles and pod.account:
            yield Finding("token", f"{pod.name} mounts the API token of '{pod.account}' and calls no API")


def check(docs: list[dict], namespace: str, specs: list[Path], profile: bool = True) -> list[Finding]:
    """Every finding of the model for one render (see the module doc)."""
    model = Model.of(docs, namespace, specs, profile)
    return [*shut_edges(model), *broader_edges(model), *api_findings(model)]
