"""Which Ray a training run uses, and whether its workers fit, decided before any training starts.

``ray.address`` in the run config, else the ``RAY_ADDRESS`` variable (Ray's own convention):

* '' or 'local': start a one-node Ray in this process (a laptop, or inside the KFP pod);
* ``http(s)://head:8265``: an existing cluster's Jobs API; the step submits a Ray job (``ray_jobs.py``);
* ``host:port`` or ``auto``: join that cluster as its driver (a process that runs inside a Ray job).

:func:`check_placement` reserves the training workers' bundles with a placement group and waits at most
``ray.placement_timeout_s``: a GPU asked for where there is none, or more workers than the cluster holds,
fails in one line instead of Ray Train retrying its worker-group start-up forever.
"""

from __future__ import annotations

import logging
import os

from fora_core import ForaConfigError

from ..config.run_config import RunConfig
from . import interruption

log = logging.getLogger("fora")


class RayClusterError(ForaConfigError):
    """The Ray cluster cannot be reached or cannot run the job as configured (one line)."""


def resolve_address(run: RunConfig) -> str:
    """The configured address ('' for a one-node Ray in this process)."""
    address = run.ray.address or os.environ.get("RAY_ADDRESS", "")
    if address.startswith("ray://"):
        raise RayClusterError(f"RAY_ADDRESS={address} is a Ray Client address, which Ray does not recommend for "
                              "long ML jobs: give the cluster's Jobs API instead, e.g. http://<head>:8265")
    return "" if address == "local" else address


def is_jobs_api(address: str) -> bool:
    return address.startswith(("http://", "https://"))


def jobs_api_address(run: RunConfig) -> str | None:
    """The Ray cluster's Jobs API when training goes there as a Ray job; None: Ray in this process."""
    address = resolve_address(run)
    return address if is_jobs_api(address) else None


def dashboard_wanted() -> bool:
    """Start Ray's dashboard with a local Ray (FORA_RAY_DASHBOARD=0: not). It brings the State API that Ray
    Train's placement-group cleaner polls (without it that actor logs warnings); on 2 CPUs it did not
    change training throughput measurably (bench_ray_overhead.py: 0.82 vs 0.79 of no-Ray tokens/s)."""
    return os.environ.get("FORA_RAY_DASHBOARD", "1") == "1"


def init_ray(run: RunConfig) -> str:
    """Connect to (or start) the run's Ray; returns 'local' or the address joined."""
    import ray  # [ray]

    address = resolve_address(run)
    if is_jobs_api(address):
        raise RayClusterError(f"ray.address {address} is a Jobs API address: the step submits a Ray job there "
                              "(this process must not join the cluster itself)")
    if ray.is_initialized():
        return address or "local"
    if address:
        try:
            ray.init(address=address, log_to_driver=True, configure_logging=False)
        except (ConnectionError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise RayClusterError(f"cannot join the Ray cluster at {address} ({first})") from None
        _keep_our_sigterm()
        return address
    ray.init(log_to_driver=True, configure_logging=False, include_dashboard=dashboard_wanted())
    _keep_our_sigterm()
    return "local"


def _keep_our_sigterm() -> None:
    """ray.init installs a crash handler that turns SIGTERM into a stack dump and exit 134; put back the
    one-line interruption (``interruption.py``) when this command had installed it."""
    if interruption.installed():
        interruption.install()


def worker_bundle(run: RunConfig) -> dict[str, float]:
    bundle = {"CPU": float(run.train.cpus_per_worker)}
    if run.train.use_gpu:
        bundle["GPU"] = 1.0
    return bundle


def check_placement(run: RunConfig, where: str, bundles: int | None = None) -> None:
    """Fail in one line when ``bundles`` training workers (default ``train.num_workers``) cannot be placed."""
    import ray  # [ray]
    from ray.util.placement_group import placement_group, remove_placement_group  # [ray]

    n = bundles or run.train.num_workers
    bundle = worker_bundle(run)
    total = ray.cluster_resources()
    have = ", ".join(f"{k} {total.get(k, 0):g}" for k in ("CPU", "GPU"))
    want = f"{n} training worker(s) of " + ", ".join(f"{k} {v:g}" for k, v in bundle.items())
    hint = ("set train.use_gpu: false, " if "GPU" in bundle and not total.get("GPU") else "") + \
        "lower train.num_workers or train.cpus_per_worker, or add nodes"
    if where == "local" and any(total.get(k, 0) < v * n for k, v in bundle.items()):
        raise RayClusterError(f"this machine's Ray cannot place {want} (it has {have}): {hint}")
    pg = placement_group([bundle] * n, strategy=run.train.placement_strategy)
    try:
        ready = pg.wait(timeout_seconds=run.ray.placement_timeout_s)
    finally:
        remove_placement_group(pg)
    if not ready:
        raise RayClusterError(f"the Ray cluster ({where}) could not place {want} within "
                              f"{run.ray.placement_timeout_s} s (ray.placement_timeout_s; it has {have}): {hint}")
