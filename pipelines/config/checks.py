"""The field checks every config section uses: each raises :class:`RunConfigError` naming the dotted field,
the value and the allowed values (``invalid value for 'train.batch_size': 0 (allowed: an integer >= 1)``)."""

from __future__ import annotations

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
