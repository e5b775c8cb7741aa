"""A mutual-exclusion lock made of the registry itself, so two pipeline runs finishing together cannot
interleave read-champion / decide / set-alias.

MLflow has no compare-and-set on aliases, but registered-model names are unique in every store (a primary
key in SQL stores, and the server answers RESOURCE_ALREADY_EXISTS): creating ``<model>.promotion-lock``
either succeeds for exactly one caller or fails. The holder deletes it when done. A lock older than
``ttl_s`` (its holder died between acquire and release) is broken by the next caller, and the break is
logged.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger("fora")

LOCK_SUFFIX = ".promotion-lock"


class RegistryLockTimeout(RuntimeError):
    """The lock could not be taken within the timeout (another promotion is running)."""


def lock_name(model_name: str) -> str:
    return model_name + LOCK_SUFFIX


def _exists_error(err: MlflowException) -> bool:
    return err.error_code == "RESOURCE_ALREADY_EXISTS" or "already exists" in str(err).lower()


def _contended(err: MlflowException) -> bool:
    """The create lost a race: the lock exists, or it existed when the server checked and was released before
    the server could read it back (the SQL store then answers RESOURCE_DOES_NOT_EXIST): try again."""
    return _exists_error(err) or err.error_code == "RESOURCE_DOES_NOT_EXIST"


def _try_break_stale(client: MlflowClient, name: str, ttl_s: float) -> None:
    try:
        held = client.get_registered_model(name)
    except MlflowException:
        return  # released meanwhile
    since = float(held.tags.get("acquired_at", "0") or 0)
    if time.time() - since > ttl_s:
        log.warning("registry lock %s held by %s since %.0f s: older than %.0f s, breaking it", name,
                    held.tags.get("holder", "?"), time.time() - since, ttl_s)
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(name)


@contextlib.contextmanager
def registry_lock(client: MlflowClient, model_name: str, holder: str = "", timeout_s: float = 300.0,
                  ttl_s: float = 600.0, poll_s: float = 0.2) -> Iterator[str]:
    """Hold ``<model_name>.promotion-lock`` for the block; yields the holder token."""
    name = lock_name(model_name)
    token = f"{holder or 'fora'}:{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_registered_model(
                name, tags={"holder": token, "acquired_at": f"{time.time():.3f}"},
                description=f"lock for promotions of {model_name} (fora-pipelines); deleted when released")
            break
        except MlflowException as err:
            if not _contended(err):
                raise
        _try_break_stale(client, name, ttl_s)
        if time.monotonic() > deadline:
            raise RegistryLockTimeout(f"another promotion of '{model_name}' holds the registry lock {name} "
                                      f"(waited {timeout_s:.0f} s); if no run is promoting, delete that "
                                      "registered model")
        time.sleep(poll_s)
    try:
        yield token
    finally:
        try:
            held = client.get_registered_model(name)
            if held.tags.get("holder") == token:
                client.delete_registered_model(name)
        except MlflowException as err:  # broken as stale meanwhile: nothing of ours to release
            log.warning("registry lock %s was gone at release (%s)", name, str(err).splitlines()[0])
