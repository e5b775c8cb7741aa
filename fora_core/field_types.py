"""Strict field types for the config dataclasses: a value of the wrong type is one line naming the field,
checked before the dataclass is built (its ``__post_init__`` then checks ranges and allowed values).

The type is the field's annotation:

* ``bool``: a YAML boolean (true/false), never a string (``'no'`` is a non-empty string, so it would be true);
* ``int``: an integer (not a boolean: YAML's ``true`` is not 1);
* ``float`` and ``int | float``: a finite number (``.inf`` and ``.nan`` are YAML numbers, never useful ones);
* ``str``: a string;
* ``list`` / ``list[X]``: a list (a comma string gets a hint: ``[a, b]`` is YAML's list);
* a dataclass: a mapping (its own fields checked the same way where it is built);
* ``dict``: a mapping; ``Any``: whatever the section's own check accepts.

    >>> check_field_types(FisherSettings, {"num_batches": "8"}, "fora.fisher.", ForaConfigError)
    ForaConfigError: invalid value for 'fora.fisher.num_batches': '8' (allowed: an integer)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

__all__ = ["check_field_types", "describe_value", "section_hint"]


def section_hint(cls: type, name: str) -> str:
    """What a section field allows: ``a mapping (a section), e.g. fisher: {num_batches: 128, ...}``."""
    first = dataclasses.fields(cls)[0]
    default = first.default if first.default is not dataclasses.MISSING else "..."
    return (f"a mapping ('{name}' is a section), e.g. {name.rsplit('.', 1)[-1]}: "
            f"{{{first.name}: {describe_value(default).strip(chr(39))}, ...}}")


def describe_value(value: Any) -> str:
    """A value as the user wrote it in YAML where that differs from Python's repr (true, false, null, .inf)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null (an empty value)"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind(hint: Any) -> tuple[str, Any]:
    """('bool'|'int'|'float'|'str'|'list'|'dict'|'section'|'any', detail) of an annotation."""
    origin = typing.get_origin(hint)
    if hint is bool:
        return "bool", None
    if hint is int:
        return "int", None
    if hint is float:
        return "float", None
    if hint is str:
        return "str", None
    if origin in (typing.Union, types.UnionType):
        args = set(typing.get_args(hint))
        if args <= {int, float}:
            return "float", None
        return "any", None
    if hint is list or origin is list:
        args = typing.get_args(hint)
        return "list", args[0] if args else None
    if hint is dict or origin is dict:
        return "dict", None
    if dataclasses.is_dataclass(hint):
        return "section", hint
    return "any", None


def _allowed(kind: str, detail: Any) -> str:
    if kind == "bool":
        return "true, false (YAML booleans)"
    if kind == "int":
        return "an integer"
    if kind == "float":
        return "a finite number"
    if kind == "str":
        return "a string (quote values YAML reads otherwise: 'true', '1.0')"
    if kind == "list":
        return "a list, e.g. [a, b]"
    return "a mapping"


def _fits(kind: str, detail: Any, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return _is_number(value)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list":
        if not isinstance(value, list):
            return False
        item_kind = _kind(detail)[0] if detail is not None else "any"
        return item_kind not in ("bool", "int", "float", "str") or all(_fits(item_kind, None, v) for v in value)
    if kind in ("dict",):
        return isinstance(value, dict)
    if kind == "section":
        return isinstance(value, (dict, detail))
    return True


def check_field_types(cls: type, data: dict[str, Any], prefix: str, error: type[Exception],
                      lenient: tuple[str, ...] = ()) -> None:
    """Raise ``error`` naming ``prefix + field`` for the first value in ``data`` whose type is not the field's
    annotation (see the module docstring). ``lenient`` fields are left to the section's own check (a field
    that accepts a shorthand, such as one string for a list)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data or f.name in lenient:
            continue
        value = data[f.name]
        kind, detail = _kind(hints[f.name])
        if _fits(kind, detail, value):
            continue
        name = prefix + f.name
        allowed = _allowed(kind, detail)
        if kind == "list" and isinstance(value, list):
            item_kind = _kind(detail)[0]
            bad = next(v for v in value if not _fits(item_kind, None, v))
            raise error(f"invalid value for '{name}': item {describe_value(bad)} "
                        f"(allowed: a list of items each {_allowed(item_kind, None)})")
        if kind == "list" and isinstance(value, str) and "," in value:
            items = ", ".join(v.strip() for v in value.split(","))
            allowed += f"; write the list as [{items}], not as one comma-separated string"
        if kind == "section":
            allowed = section_hint(detail, name)
        raise error(f"invalid value for '{name}': {describe_value(value)} (allowed: {allowed})")


def printable_key(key: object) -> str:
    """A config key as one printable line: control characters (a stray ``\\r`` from a Windows file) escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(key))
