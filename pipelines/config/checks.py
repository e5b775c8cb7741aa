"""The field checks every config section uses: each raises :class:`RunConfigError` naming the dotted field,
the value and the allowed values (``invalid value for 'train.batch_size': 0 (allowed: an integer >= 1)``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fora_core.field_types import check_field_types, describe_value, printable_key, section_hint

from .errors import RunConfigError


def fail(name: str, value: Any, allowed: str) -> None:
    raise RunConfigError(f"invalid value for '{name}': {describe_value(value)} (allowed: {allowed})")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        fail(name, value, "true, false")


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(name, value, f"an integer >= {minimum}")


def check_number(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        value >= 0 if allow_zero else value > 0)
    if not ok:
        fail(name, value, "a finite number >= 0" if allow_zero else "a finite number > 0")


def reject_unknown(cls, data: dict, prefix: str) -> None:
    """One line for the first key of ``data`` that is not a field of ``cls`` (``prefix``: the dotted section)."""
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if not isinstance(key, str) or key not in known:
            raise RunConfigError(f"unknown field '{prefix}{printable_key(key)}' (allowed: {', '.join(sorted(known))})")


def build_section(cls, value: Any, name: str, lenient: tuple[str, ...] = ()):
    """``cls(**value)`` for a config section given as a mapping (or already built); a non-mapping, an unknown
    key or a value of the wrong type (``fora_core/field_types.py``) is one line naming the dotted field."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise RunConfigError(f"invalid value for '{name}': {describe_value(value)} (allowed: {section_hint(cls, name)})")
    reject_unknown(cls, value, name + ".")
    check_field_types(cls, value, name + ".", RunConfigError, lenient or getattr(cls, "LENIENT", ()))
    return cls(**value)
