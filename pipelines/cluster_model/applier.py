"""Who applies the overlay, and whether the API server lets them: in a Kubeflow profile namespace the owner holds
the ClusterRole ``kubeflow-admin`` there (the profile controller's ``namespaceAdmin`` RoleBinding), whose rules are
aggregated from every ClusterRole labelled ``rbac.authorization.kubeflow.org/aggregate-to-kubeflow-admin`` (and,
through ``kubeflow-edit`` and ``kubeflow-view``, theirs): kubeflow/manifests ``common/kubeflow-roles``. The apply
must be allowed to create every object of the render, and, because the API server refuses a Role that grants more
than its creator holds (RBAC escalation prevention, kubernetes ``pkg/registry/rbac/validation/rule.go``
ConfirmNoEscalation), every rule of every Role in the render must be within the applier's own rules. A
cluster-scoped object (the serving admission policy) is for a cluster admin and lives apart (``k8s/cluster-admin``).
"""

from __future__ import annotations

from collections.abc import Iterator

from . import rbac
from .selectors import matches

# kind -> (API group, resource) of what the overlays render
RESOURCES = {
    "ConfigMap": ("", "configmaps"), "Secret": ("", "secrets"), "Service": ("", "services"),
    "ServiceAccount": ("", "serviceaccounts"), "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "Deployment": ("apps", "deployments"), "Job": ("batch", "jobs"),
    "Role": ("rbac.authorization.k8s.io", "roles"), "RoleBinding": ("rbac.authorization.k8s.io", "rolebindings"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "RayCluster": ("ray.io", "rayclusters"), "RayJob": ("ray.io", "rayjobs"),
}


def aggregated_rules(cluster_roles: list[dict], name: str, seen: frozenset[str] = frozenset()) -> list[dict]:
    """The rules of ClusterRole ``name`` after the aggregation controller has filled it in (transitively)."""
    role = next((r for r in cluster_roles if r["metadata"]["name"] == name), None)
    if role is None or name in seen:
        return []
    rules = list(role.get("rules") or [])
    for selector in (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []:
        for other in cluster_roles:
            if other is not role and matches(selector, other["metadata"].get("labels") or {}):
                rules += aggregated_rules(cluster_roles, other["metadata"]["name"], seen | {name})
    return rules


def apply_findings(docs: list[dict], applier_rules: list[dict], who: str) -> Iterator[str]:
    """What the applier (holding ``applier_rules`` in the namespace) could not create, or could not grant."""
    def holds(req: rbac.Request) -> bool:
        return any(rbac.rule_allows(rule, req) for rule in applier_rules)

    for d in docs:
        kind = d["kind"]
        if kind not in RESOURCES:
            yield f"{who} cannot apply {kind} {d['metadata']['name']}: not a namespaced kind the model knows"
            continue
        group, resource = RESOURCES[kind]
        for verb in ("get", "create", "patch"):  # kubectl apply reads, then creates or patches
            if not holds(rbac.Request(verb, group, resource, d["metadata"]["name"])):
                yield f"{who} may not {verb} {group or 'core'}/{resource} ({kind} {d['metadata']['name']})"
        if kind == "Role":
            for rule in d.get("rules") or []:
                for grant in rbac.grants(rule):
                    if not holds(grant if grant.name else rbac.Request(grant.verb, grant.group, grant.resource, "")):
                        yield (f"Role {d['metadata']['name']} grants {grant}, which {who} does not hold: the API "
                               "server refuses it (RBAC escalation prevention)")
