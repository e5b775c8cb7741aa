"""The service addresses a run config (or the environment) names, checked by form before anything connects:
the Ray cluster (``ray.address`` / ``RAY_ADDRESS``), MLflow (``register.tracking_uri`` /
``MLFLOW_TRACKING_URI``) and the S3 endpoint (``AWS_ENDPOINT_URL`` and its variants). A value from the
environment gets the same check as the same value in the config, and the error names the variable.

Reachability (a short TCP connect to each) is checked by the preflight (``runtime/reachability.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from .checks import fail
from .errors import RunConfigError

JOBS_API_PORT = 8265
"""Ray's dashboard and Jobs API port: an address with it is the Jobs API, spoken over HTTP."""
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")
S3_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "S3_ENDPOINT_URL")
_HOST = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
RAY_ALLOWED = ("'', 'local', http(s)://head:8265 (the Jobs API), host:port of a cluster's GCS (as its driver, "
               "e.g. head:6379) or 'auto'")


def _http_url(name: str, value: str, allowed: str) -> None:
    """An http(s)://host[:port][/path] URL with a plausible host and a port in 1..65535."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as err:
        fail(name, value, f"{allowed} ({err})")
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not (_HOST.match(host) or ":" in host):  # ':' an IPv6 address
        fail(name, value, allowed)
    if port is not None and not 0 < port < 65536:
        fail(name, value, allowed)


def check_ray_address(value: object, name: str = "ray.address") -> None:
    """'' / local / auto / http(s)://head:8265 / host:port (not ray://, and not the Jobs API port without
    its scheme: Ray would wait for a GCS that never answers)."""
    if not isinstance(value, str):
        fail(name, value, RAY_ALLOWED)
    if value in ("", "local", "auto"):
        return
    if value.startswith("ray://"):
        fail(name, value, RAY_ALLOWED + "; Ray Client ray:// is not for long jobs")
    if "://" in value:
        _http_url(name, value, RAY_ALLOWED)
        return
    host, _, port = value.rpartition(":")
    if not host or not _HOST.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
        fail(name, value, RAY_ALLOWED)
    if int(port) == JOBS_API_PORT:
        raise RunConfigError(f"invalid value for '{name}': {value!r} (port {JOBS_API_PORT} is Ray's Jobs API, "
                             f"which speaks HTTP: write http://{value}; a bare host:port joins the cluster's GCS, "
                             "e.g. head:6379)")


def check_tracking_uri(value: object, name: str = "register.tracking_uri") -> None:
    """'' (SQLite under output_dir), a local path, or a URI whose scheme MLflow knows."""
    allowed = "'' (SQLite under output_dir), http(s)://mlflow:5000, sqlite:///path/mlflow.db, file:///path, " \
              "postgresql://..., mysql://..., databricks"
    if not isinstance(value, str):
        fail(name, value, allowed)
    if not value or "://" not in value and ":" not in value.split("/")[0]:
        return  # '' or a local folder (MLflow's file store)
    scheme = value.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in TRACKING_SCHEMES:
        fail(name, value, allowed + f" (unknown scheme '{scheme}')")
    if scheme in ("http", "https"):
        _http_url(name, value, allowed)


def check_endpoint_url(value: str, name: str) -> None:
    _http_url(name, value, "http(s)://host:port of an S3-compatible server, e.g. http://seaweedfs:8333")


def check_environment(env: Mapping[str, str] | None = None, *, ray_address: str = "", tracking_uri: str = "") -> None:
    """The environment's service addresses, where they are in force: ``RAY_ADDRESS`` when ``ray.address`` is
    '', ``MLFLOW_TRACKING_URI`` when ``register.tracking_uri`` is '', and every S3 endpoint variable."""
    env = os.environ if env is None else env
    if not ray_address and env.get("RAY_ADDRESS"):
        check_ray_address(env["RAY_ADDRESS"], "RAY_ADDRESS (environment)")
    if not tracking_uri and env.get("MLFLOW_TRACKING_URI"):
        check_tracking_uri(env["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI (environment)")
    for var in S3_ENDPOINT_VARS:
        if env.get(var):
            check_endpoint_url(env[var], f"{var} (environment)")
