"""Reading config text and ``section.field=value`` overrides, the same way everywhere: the CLI's ``--set``,
``fora submit`` and the pipeline's ``overrides`` parameter as the KFP pods receive it (R7: each reaches the
pods exactly as typed)."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml


class ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader with YAML 1.2's scalars, as every other YAML tool a user knows reads them:

    * ``1e-3`` is a number (PyYAML's 1.1 rules need ``1.0e-3`` and would hand the learning rate over as the
      string '1e-3');
    * only ``true`` and ``false`` are booleans: ``on``, ``off``, ``yes``, ``no`` stay strings (YAML 1.1 reads
      ``bf16: on`` as true, and ``use_ray: no`` as false);
    * a key given twice in one mapping is an error naming both lines (YAML 1.1 keeps the last silently).
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' may be overridden by the keys beside it
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class names it
                    break
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}' (first at line {first.line + 1}); each key once",
                        key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
ConfigLoader.yaml_implicit_resolvers = {  # drop YAML 1.1's yes/no/on/off booleans (the resolver above stays)
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag != "tag:yaml.org,2002:bool" or regexp.pattern.startswith("^(?:true")]
    for first, resolvers in ConfigLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9][0-9_]*"
               r"(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF))$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def apply_overrides(data: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """Set each ``section.field=value`` (value read as YAML) in ``data``; ValueError for a malformed item."""
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.field=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"override {item!r}: '{key.strip()}' is not a section.field name")
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: '{'.'.join(parts[:depth + 1])}' is a value, not a section "
                                 "(nothing below it can be set)")
        try:
            node[parts[-1]] = yaml.load(raw, Loader=ConfigLoader)
        except (yaml.YAMLError, ValueError) as err:
            raise ValueError(f"override {item!r}: the value is not valid YAML "
                             f"({getattr(err, 'problem', None) or str(err).splitlines()[0]})") from None
    return data


_KEY = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_.]*\s*=")


def join_overrides(items: list[str]) -> str:
    """Overrides as one pipeline parameter: a JSON list, so each reaches the pods exactly as typed
    (``eval.tasks=[boolq, piqa]`` keeps its comma)."""
    return json.dumps(list(items)) if items else ""


def split_overrides(text: str) -> list[str]:
    """One pipeline parameter back to overrides: a JSON list of strings (what ``fora submit`` sends), or
    what a person types in the Kubeflow UI: items separated by newlines, or by commas that start a new
    ``key=`` (a comma inside brackets, braces or quotes, or inside a value, stays in the value)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError:
            items = None
        if isinstance(items, list) and all(isinstance(i, str) for i in items):
            return [i.strip() for i in items if i.strip()]
    out, current, depth, quote = [], [], 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(0, depth - 1)
        elif depth == 0 and (ch == "\n" or (ch == "," and _KEY.match(text, i + 1))):
            out.append("".join(current))
            current = []
            continue
        current.append(ch)
    out.append("".join(current))
    return [item.strip() for item in out if item.strip()]
