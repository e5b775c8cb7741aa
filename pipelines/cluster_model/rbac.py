"""RBAC as the API server's authorizer evaluates it (kubernetes ``plugin/pkg/auth/authorizer/rbac/rbac.go`` and
``pkg/apis/rbac/v1/evaluation_helpers.go``): a request (verb, API group, resource, name) by a ServiceAccount is
allowed when a RoleBinding in its namespace (or a ClusterRoleBinding) names the account and its role has a rule
whose apiGroups, resources and verbs contain the request's (or ``*``) and whose ``resourceNames`` is empty or
contains the name. Roles only grant: there is no deny."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """One API call: ``name`` '' for a collection call (list, create without a name) or any object's name."""

    verb: str
    group: str
    resource: str
    name: str = ""

    def __str__(self) -> str:
        what = f"{self.group or 'core'}/{self.resource}" + (f"/{self.name}" if self.name else "")
        return f"{self.verb} {what}"


def _covers(values: list[str], want: str) -> bool:
    return "*" in values or want in values


def rule_allows(rule: dict, req: Request) -> bool:
    names = rule.get("resourceNames") or []
    return (_covers(rule.get("apiGroups") or [], req.group) and _covers(rule.get("resources") or [], req.resource)
            and _covers(rule.get("verbs") or [], req.verb) and (not names or req.name in names))


def bound_rules(docs: list[dict], namespace: str, account: str) -> Iterator[tuple[str, dict]]:
    """(role name, rule) of every rule bound to ServiceAccount ``namespace/account`` in ``docs``."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("Role", "ClusterRole")}
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if b["kind"] == "RoleBinding" and b["metadata"].get("namespace") != namespace:
            continue
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                   and s.get("namespace", b["metadata"].get("namespace")) == namespace for s in b.get("subjects") or []):
            continue
        role = roles.get((b["roleRef"]["kind"], b["roleRef"]["name"]))
        for rule in (role or {}).get("rules") or []:
            yield role["metadata"]["name"], rule


def allowed(docs: list[dict], namespace: str, account: str, req: Request) -> bool:
    return any(rule_allows(rule, req) for _, rule in bound_rules(docs, namespace, account))


def grants(rule: dict) -> Iterator[Request]:
    """Every request one rule grants, '*' kept as '*' (a wildcard is a grant of its own)."""
    for group in rule.get("apiGroups") or []:
        for resource in rule.get("resources") or []:
            for verb in rule.get("verbs") or []:
                for name in rule.get("resourceNames") or [""]:
                    yield Request(verb, group, resource, name)
