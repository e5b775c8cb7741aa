"""The services a run needs, reached once with short timeouts before any work starts, so that a server that is
down (or a GPU that is not there) is one line before data prep, not a FAILED MLflow run and folders after the
Fisher pass:

* the Ray cluster: the Jobs API's ``/api/version`` (``http(s)://head:8265``), or a TCP connect to a GCS
  address (``host:port``);
* the object store: the ``storage.uri`` bucket (HEAD, created when ``storage.create_bucket``);
* the MLflow server (``tracking.check_server``: ``/health`` and one authenticated read);
* and, for ``fora run`` on this machine, GPUs asked for (``train.use_gpu``, ``resources.<step>.gpus``).

Every call has a timeout (``TIMEOUT_S``); nothing here waits for longer.
"""

from __future__ import annotations

import socket

from ..config.errors import RunConfigError
from ..config.run_config import RunConfig
from . import storage
from .ray_runtime import RayClusterError, is_jobs_api, resolve_address
from .tracking import check_server

TIMEOUT_S = 5.0


def check_ray(run: RunConfig) -> str:
    """'local', or the cluster address that answered; RayClusterError (one line) when it does not."""
    address = resolve_address(run)
    if not address:
        return "local"
    if is_jobs_api(address):
        from .ray_jobs import RayJobs

        RayJobs(address)  # GET /api/version with a timeout; auth and "not a Jobs API" named
        return address
    if address == "auto":
        return address  # inside a Ray job: the cluster is the one running this process
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT_S):
            pass
    except OSError as err:
        raise RayClusterError(f"cannot reach the Ray cluster at {address} ({err.strerror or type(err).__name__}, "
                              f"{TIMEOUT_S:g} s): is it up, and is ray.address / RAY_ADDRESS right?") from None
    return address


LOCAL_STEPS = ("data_prep", "calibrate", "evaluate", "register")
"""The steps ``fora run`` runs in its own process (training goes to Ray, local or a cluster)."""


def check_local_gpus(run: RunConfig) -> None:
    """``fora run`` on this machine: a GPU asked for where this machine itself would run the work must exist
    (``train.use_gpu`` with a local Ray; ``resources.<step>.gpus`` of the steps run in this process). Not for
    a KFP pod, which is not the machine the other steps run on."""
    import torch

    if torch.cuda.is_available():
        return
    if run.train.use_gpu and not resolve_address(run):
        raise RunConfigError("invalid value for 'train.use_gpu': true, but this machine has no GPU (torch sees "
                             "none) and training runs here (ray.address is ''): set it to false, or give a "
                             "cluster with GPUs in ray.address")
    for step in LOCAL_STEPS:
        if run.resources.of(step).gpus:
            raise RunConfigError(f"invalid value for 'resources.{step}.gpus': {run.resources.of(step).gpus}, but "
                                 "this machine has no GPU and `fora run` runs that step here: set it to 0 (the "
                                 "resources section sizes the Kubeflow pods)")


def check_services(run: RunConfig) -> dict[str, str]:
    """Every service the run needs, in the order a person would fix them; returns what answered."""
    found = {"ray": check_ray(run)}
    if run.storage.uri:
        storage.ensure_prefix(run.storage.uri, create=run.storage.create_bucket)
        found["storage"] = run.storage.uri
    check_server(run.tracking_uri)
    found["mlflow"] = run.tracking_uri.split("@")[-1] if "://" in run.tracking_uri else run.tracking_uri
    return found
