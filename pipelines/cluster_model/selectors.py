"""Kubernetes label selectors (``metav1.LabelSelector``): ``matchLabels`` and ``matchExpressions`` (In, NotIn,
Exists, DoesNotExist), ANDed; an empty selector ``{}`` selects everything. Semantics of
kubernetes ``staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/helpers.go`` (LabelSelectorAsSelector) and
``pkg/labels/selector.go`` (Requirement.Matches: NotIn and DoesNotExist also match a missing key)."""

from __future__ import annotations

from collections.abc import Mapping


def matches(selector: Mapping | None, labels: Mapping[str, str]) -> bool:
    """True when ``labels`` satisfy ``selector`` (None or {} selects every object)."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], [str(v) for v in expr.get("values") or []]
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown label selector operator {op!r}")
    return True
