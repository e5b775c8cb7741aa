"""The field checks every config section uses: each raises :class:`RunConfigError` naming the dotted field,
the value and the allowed values (``invalid value for 'train.batch_size': 0 (allowed: an integer >= 1)``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import RunConfigError


def fail(name: str, value: Any, allowed: str) -> None:
    raise RunConfigError(f"invalid value for '{name}': {value!r} (allowed: {allowed})")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        fail(name, value, "true, false")


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(name, value, f"an integer >= {minimum}")


def check_number(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        fail(name, value, "a number >= 0" if allow_zero else "a number > 0")


def build_section(cls, value: Any, name: str):
    """``cls(**value)`` for a nested config section given as a mapping (or already built); a non-mapping or an
    unknown key is one line naming the dotted field and the allowed keys."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise RunConfigError(f"'{name}' must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    for key in value:
        if key not in known:
            raise RunConfigError(f"unknown field '{name}.{key}' (allowed: {', '.join(sorted(known))})")
    return cls(**value)
