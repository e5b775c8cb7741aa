"""The MLflow tracking server, checked before a step relies on it.

A step that logs to (or registers in) an MLflow server first asks its ``/health`` and one authenticated
read, with short timeouts: a server that is down, or credentials it refuses, end the step in one line
naming the server, before any work starts and before anything is half-registered. The MLflow client's own
retries are shortened (3 tries, 1-2-4 s apart, 60 s per request) unless set already, so an outage during a
step fails it in seconds rather than after MLflow's default minutes of retries. Credentials come from
MLflow's own variables (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` or
``MLFLOW_TRACKING_TOKEN``, from a Secret on a cluster) and are never logged.
"""

from __future__ import annotations

import os

from fora_core import ForaConfigError

CHECK_TIMEOUT_S = 10


class TrackingServerError(ForaConfigError):
    """The MLflow server is unreachable or refuses this step (one line)."""


def _auth() -> tuple[tuple[str, str] | None, dict[str, str]]:
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return ((user, password) if user and password else None), ({"Authorization": f"Bearer {token}"} if token else {})


def check_server(tracking_uri: str) -> None:
    """Raise :class:`TrackingServerError` unless an http(s) tracking server answers and accepts us."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests

    for var, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                       ("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")):
        os.environ.setdefault(var, value)
    base = tracking_uri.rstrip("/")
    auth, headers = _auth()
    try:
        requests.get(f"{base}/health", timeout=CHECK_TIMEOUT_S).raise_for_status()
        r = requests.get(f"{base}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, auth=auth,
                         headers=headers, timeout=CHECK_TIMEOUT_S)
    except requests.RequestException as err:
        raise TrackingServerError(f"cannot reach the MLflow server at {base} ({type(err).__name__}): is it up, "
                                  "and is register.tracking_uri right?") from None
    if r.status_code in (401, 403):
        raise TrackingServerError(f"the MLflow server at {base} refused this step's credentials (HTTP "
                                  f"{r.status_code}): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                                  "(or MLFLOW_TRACKING_TOKEN) from the server's Secret")
    if r.status_code != 200:
        raise TrackingServerError(f"the MLflow server at {base} answered HTTP {r.status_code} to a read")
