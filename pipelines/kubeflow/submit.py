"""Submit the compiled pipeline to a Kubeflow Pipelines endpoint: one run, or a recurring (scheduled) run."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from fora_core import ForaConfigError

from ..config.run_config import RunConfig


class SubmitError(ForaConfigError):
    """The KFP endpoint could not be reached or refused the request (one line, no traceback)."""


CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,#-]+$")


def check_request(host: str, schedule: str | None) -> None:
    """The endpoint is a URL and the schedule a 6-field cron, checked before anything is contacted."""
    if not host.startswith(("http://", "https://")):
        raise SubmitError(f"--host {host!r}: give the KFP API endpoint as a URL, e.g. http://localhost:8080 or "
                          "https://kubeflow.example.com/pipeline")
    if schedule is None:
        return
    fields = schedule.split()
    example = "e.g. '0 0 3 * * *' = every day at 03:00, '0 30 2 * * 1' = Mondays at 02:30"
    if len(fields) == 5 and all(CRON_FIELD.match(f) for f in fields):
        raise SubmitError(f"--schedule {schedule!r}: KFP's cron has 6 fields, seconds first: '0 {schedule}' "
                          f"({example})")
    if len(fields) != 6 or not all(CRON_FIELD.match(f) for f in fields):
        raise SubmitError(f"--schedule {schedule!r}: not a cron expression of 6 fields (seconds minutes hours "
                          f"day-of-month month day-of-week; {example})")


def read_token(path: str | None) -> str | None:
    """The bearer token in ``path`` (multi-user KFP behind Kubeflow's gateway: e.g. ``kubectl -n NS create token
    default-editor --audience pipelines.kubeflow.org``), or None; never printed."""
    if not path:
        return None
    try:
        token = Path(path).expanduser().read_text().strip()
    except OSError as err:
        raise SubmitError(f"--token-file {path}: cannot read it ({err.strerror or err})") from None
    if not token:
        raise SubmitError(f"--token-file {path}: the file is empty")
    return token


def _client(host: str, namespace: str | None, token: str | None = None):
    import logging
    import warnings

    import kfp

    for name in ("urllib3", "urllib3.connectionpool"):  # its retry lines would repeat the one error below
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="This client only works", category=FutureWarning)
    try:
        return kfp.Client(host=host, namespace=namespace, **({"existing_token": token} if token else {}))
    except Exception as err:  # urllib3/kfp_server_api errors carry multi-line reprs
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise SubmitError(f"cannot reach the KFP endpoint {host} ({first})") from None


def submit(host: str, config_text: str, overrides: str = "", experiment: str = "fora",
           run_name: str | None = None, schedule: str | None = None, namespace: str | None = None,
           service_account: str | None = None, run: RunConfig | None = None,
           params: dict | None = None, images=None, token_file: str | None = None) -> str:
    """Compile (with ``run``'s per-step resources), then create a run (or a recurring run with a 6-field
    ``schedule`` cron) whose pods use ``service_account``; returns a line to print. ``overrides`` is what
    ``join_overrides`` makes of ``--set`` items: a JSON list, so every item reaches the pods as typed; ``params``
    the typed form parameters (``--param``)."""
    from .fora_pipeline import compile_pipeline

    check_request(host, schedule)
    client = _client(host, namespace, read_token(token_file))
    package = Path(tempfile.mkdtemp(prefix="fora-submit-")) / "fora_pipeline.yaml"
    compile_pipeline(package, run=run, images=images)
    arguments = {"config_yaml": config_text, "overrides": overrides, **(params or {})}
    try:
        if schedule:  # a recurring run may skip training when nothing changed (register.skip_unchanged)
            arguments["scheduled"] = True
            exp = client.create_experiment(experiment, namespace=namespace)
            job = client.create_recurring_run(exp.experiment_id, job_name=run_name or "fora-retrain",
                                              cron_expression=schedule, pipeline_package_path=str(package),
                                              params=arguments, service_account=service_account,
                                              no_catchup=True, max_concurrency=1)  # no backlog after a pause
            return f"scheduled recurring run {job.recurring_run_id} ({schedule}) in experiment '{experiment}'"
        result = client.create_run_from_pipeline_package(str(package), arguments=arguments, run_name=run_name,
                                                         experiment_name=experiment, namespace=namespace,
                                                         service_account=service_account)
        return f"submitted run {result.run_id}: {host.rstrip('/')}/#/runs/details/{result.run_id}"
    except Exception as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise SubmitError(f"the KFP endpoint {host} refused the pipeline ({first})") from None
