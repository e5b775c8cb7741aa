"""Training (and sweeps) on an existing Ray cluster, submitted as Ray jobs through the Jobs API.

This is what a KubeRay ``RayJob`` runs, and what Ray recommends for long ML jobs (not Ray Client). The step
that submits it:

1. stages what the job needs where the cluster can read it (``storage.uri``, an s3:// prefix): the run config,
   the data and the Fisher report, unless they are already s3:// artifacts; it says so in its log;
2. submits ``fora train <config> --data s3://... --calibration s3://... --out s3://...`` with a submission id
   fixed by the run's name and the pipeline run (so a retried step finds it again);
3. streams the job's log lines into its own log, prefixed ``[ray job]``;
4. returns when the job succeeds, fails the step in one line (the job's own ``fora: error:`` line when it
   has one) when it fails, and stops the job when the step is cancelled or its pod is killed (SIGTERM/SIGINT):
   no orphaned training on the cluster;
5. downloads the job's outputs (adapter, history, loss curve) into the step's output folder.

A retried step with the same pipeline run attaches to the job if it still runs, takes its result if it
succeeded, and otherwise submits ``<id>-2``, ``<id>-3``...: the new job resumes from the run's S3
checkpoints (``checkpoints.py``), not from step 0.

The Jobs API's credentials: ``RAY_AUTH_TOKEN`` (the cluster's token auth, from a Secret) is sent as a
bearer token; no credential ever travels in the job's entrypoint, metadata or runtime environment. The
cluster's own nodes hold the S3 and MLflow credentials.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from ..config.errors import FailedElsewhere
from ..config.run_config import RunConfig
from . import checkpoints, storage
from .ray_runtime import RayClusterError

log = logging.getLogger("fora")

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
STOP_WAIT_S = 30


class RayJobFailed(FailedElsewhere):
    """The Ray job failed or was stopped on the cluster; the message is one line."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:240] if text else type(err).__name__


class RayJobs:
    """A Jobs API client for one cluster, with one-line errors (``address`` is http(s)://head:8265)."""

    def __init__(self, address: str, poll_s: float = 2.0) -> None:
        import requests
        from ray.job_submission import JobSubmissionClient

        self.address = address.rstrip("/")
        self.poll_s = poll_s
        token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:  # the SDK's own request has no timeout: an unroutable address would hang the step
            r = requests.get(f"{self.address}/api/version", headers=headers, timeout=15)
        except requests.RequestException as err:
            raise RayClusterError(f"cannot reach the Ray cluster's Jobs API at {self.address} "
                                  f"({type(err).__name__}): is RAY_ADDRESS / ray.address right?") from None
        if r.status_code in (401, 403):
            raise RayClusterError(f"the Ray cluster at {self.address} refused the request ({r.status_code} "
                                  f"{'Unauthorized' if r.status_code == 401 else 'Forbidden'}): set RAY_AUTH_TOKEN "
                                  "to the cluster's token (from its Secret)")
        if r.status_code != 200:
            raise RayClusterError(f"{self.address} is not a Ray Jobs API (GET /api/version: HTTP {r.status_code})")
        try:
            self.client = JobSubmissionClient(self.address, headers=headers or None)
        except Exception as err:
            raise RayClusterError(f"cannot use the Ray Jobs API at {self.address} ({_first_line(err)})") from None

    def status(self, submission_id: str) -> str | None:
        """The job's status, or None when no job has that id."""
        try:
            return str(self.client.get_job_info(submission_id).status)
        except RuntimeError as err:
            if "404" in str(err):
                return None
            raise RayClusterError(f"the Ray cluster at {self.address} did not answer for job {submission_id} "
                                  f"({_first_line(err)})") from None

    def run(self, base_id: str, entrypoint: str, metadata: dict[str, str], log_prefix: str = "[ray job] ") -> str:
        """Submit (or re-attach to) the job and watch it to the end; returns the submission id it ran as."""
        submission_id, attempt = base_id, 1
        state = self.status(submission_id)
        while state in ("FAILED", "STOPPED"):
            previous, ended = submission_id, state
            attempt += 1
            submission_id = f"{base_id}-{attempt}"
            state = self.status(submission_id)
            if state is None:
                log.info("Ray job %s ended %s earlier; submitting %s, which resumes from the run's checkpoints",
                         previous, ended, submission_id)
        if state == "SUCCEEDED":
            log.info("Ray job %s already succeeded (a retried step): taking its result", submission_id)
            return submission_id
        if state in ("PENDING", "RUNNING"):
            log.info("Ray job %s is already %s (a retried step): attaching to it", submission_id, state.lower())
        else:
            try:
                self.client.submit_job(entrypoint=entrypoint, submission_id=submission_id, metadata=metadata,
                                       entrypoint_num_cpus=0)
            except Exception as err:
                raise RayClusterError(f"the Ray cluster at {self.address} refused job {submission_id} "
                                      f"({_first_line(err)})") from None
            log.info("submitted Ray job %s to %s (dashboard: %s/#/jobs/%s)", submission_id, self.address,
                     self.address, submission_id)
        self.watch(submission_id, log_prefix)
        return submission_id

    def watch(self, submission_id: str, log_prefix: str = "[ray job] ") -> None:
        """Stream the job's log and wait for it; stop it if this process is told to stop."""
        printed = 0
        with _stop_job_on_signals(self, submission_id):
            while True:
                state = self.status(submission_id) or "FAILED"
                printed = self._print_new_logs(submission_id, printed, log_prefix)
                if state in TERMINAL:
                    break
                time.sleep(self.poll_s)
        if state != "SUCCEEDED":
            raise RayJobFailed(f"Ray job {submission_id} on {self.address} {state.lower()}: "
                               f"{self._reason(submission_id)}")
        log.info("Ray job %s succeeded", submission_id)

    def _print_new_logs(self, submission_id: str, printed: int, prefix: str) -> int:
        try:
            text = self.client.get_job_logs(submission_id)
        except Exception:  # logs are best effort; the status decides
            return printed
        new = text[printed:]
        if new:
            lines = new.splitlines()
            complete = lines if new.endswith("\n") else lines[:-1]
            for line in complete:
                print(f"{prefix}{line}", file=sys.stderr, flush=True)
            printed += sum(len(line) + 1 for line in complete)
        return printed

    def _reason(self, submission_id: str) -> str:
        """The job's own one-line error if it printed one, else the cluster's message."""
        with contextlib.suppress(Exception):
            for line in reversed(self.client.get_job_logs(submission_id).splitlines()):
                if "fora: error:" in line:
                    return line.split("fora: error:", 1)[1].strip()
        with contextlib.suppress(Exception):
            info = self.client.get_job_info(submission_id)
            return (info.message or str(info.status)).strip().splitlines()[-1][:300]
        return "see the job's log on the Ray dashboard"

    def stop(self, submission_id: str) -> str | None:
        """Stop the job and wait (up to STOP_WAIT_S) until the cluster says it stopped."""
        with contextlib.suppress(Exception):
            self.client.stop_job(submission_id)
        deadline = time.monotonic() + STOP_WAIT_S
        state = self.status(submission_id)
        while state not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.5)
            state = self.status(submission_id)
        return state


@contextlib.contextmanager
def _stop_job_on_signals(jobs: RayJobs, submission_id: str) -> Iterator[None]:
    """SIGTERM (a cancelled KFP run, a deleted pod) or SIGINT stops the Ray job before this process exits."""

    class _Stop(BaseException):
        def __init__(self, signum: int) -> None:
            self.signum = signum

    def handler(signum, frame):
        raise _Stop(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except _Stop as stop:
        for s, h in previous.items():
            signal.signal(s, h)
        name = signal.Signals(stop.signum).name
        log.warning("%s received: stopping Ray job %s on %s", name, submission_id, jobs.address)
        state = jobs.stop(submission_id)
        print(f"fora: stopped Ray job {submission_id} ({state or 'unknown state'}) after {name}", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# -- the train step on a cluster ---------------------------------------------------------------------
def job_prefix(run: RunConfig, run_key: str | None) -> str:
    if not run.storage.uri:
        raise RayClusterError("training on a Ray cluster needs storage both this step and the cluster can reach: "
                              "set 'storage.uri' to an s3://bucket/prefix")
    return storage.join(run.storage.uri, run.name, checkpoints.safe_key(run_key))


def stage(local: str | Path, artifact_uri: str | None, dest: str, what: str) -> str:
    """The URI the Ray job reads ``what`` from: the artifact's own s3:// URI, or a copy uploaded to ``dest``."""
    if storage.is_uri(artifact_uri) or storage.is_uri(str(local)):
        uri = str(artifact_uri) if storage.is_uri(artifact_uri) else str(local)
        log.info("the Ray job reads the %s from the object store: %s", what, uri)
        return uri
    log.info("staging the %s to %s (the Ray cluster cannot read this pod's files)", what, dest)
    storage.upload_dir(local, dest)
    return dest


def job_config(run: RunConfig) -> str:
    """The run config as the job sees it: joins the cluster it runs on (ray.address auto)."""
    d = run.to_dict()
    d["ray"]["address"] = "auto"
    return yaml.safe_dump(d, sort_keys=False)


def submission_id(kind: str, run: RunConfig, run_key: str | None) -> str:
    return f"fora-{kind}-{run.name}-{checkpoints.safe_key(run_key)}"


def _submit_step(kind: str, run: RunConfig, address: str, data_dir: str | Path, calib_dir: str | Path,
                 run_id: str | None, run_key: str | None, data_uri: str | None, calib_uri: str | None,
                 extra: list[str]) -> tuple[str, str]:
    """Stage the inputs, submit ``fora <kind>`` as a Ray job and watch it; returns (job id, outputs URI)."""
    prefix = job_prefix(run, run_key)
    storage.ensure_bucket(prefix, create=run.storage.create_bucket)
    jobs = RayJobs(address, run.ray.job_poll_s)
    data = stage(data_dir, data_uri, storage.join(prefix, "inputs", "data"), "data")
    calib = stage(calib_dir, calib_uri, storage.join(prefix, "inputs", "calibration"), "Fisher report")
    config_uri = storage.join(prefix, "job", f"{kind}_config.yaml")
    storage.write_text(config_uri, job_config(run))
    outputs = storage.join(prefix, kind)
    key = checkpoints.safe_key(run_key)
    argv = ["fora", kind, config_uri, "--data", data, "--calibration", calib, "--out", outputs, "--run-key", key,
            "--quiet", *extra]
    if run_id:
        argv += ["--mlflow-run-id", run_id]
    sid = jobs.run(submission_id(kind, run, run_key), shlex.join(argv),
                   metadata={"fora.step": kind, "fora.run": run.name, "fora.run_key": key,
                             "fora.mlflow_run_id": run_id or ""})
    return sid, outputs


def _download(outputs: str, out_dir: str | Path) -> Path:
    """The job's outputs (a URI) copied to ``out_dir``; returns a local folder holding them: ``out_dir``
    itself, or a scratch copy when ``out_dir`` is a URI too."""
    if storage.is_uri(str(out_dir)):
        local = Path(tempfile.mkdtemp(prefix="fora-job-out-"))
        storage.download_dir(outputs, local)
        if str(out_dir).rstrip("/") != outputs.rstrip("/"):
            storage.upload_dir(local, str(out_dir))
        return local
    with tempfile.TemporaryDirectory(prefix="fora-job-out-") as tmp:
        storage.download_dir(outputs, tmp)
        storage.copy_to(Path(tmp), out_dir)
    return Path(out_dir)


def train_on_cluster(run: RunConfig, address: str, data_dir: str | Path, calib_dir: str | Path,
                     out_dir: str | Path, run_id: str | None, run_key: str | None,
                     data_uri: str | None = None, calib_uri: str | None = None) -> dict:
    """The train step as a Ray job; returns the same summary as ``run_training`` plus ``job``."""
    started = time.time()
    sid, outputs = _submit_step("train", run, address, data_dir, calib_dir, run_id, run_key, data_uri, calib_uri, [])
    out = _download(outputs, out_dir)
    summary = json.loads((out / "train_summary.json").read_text())
    history = json.loads((out / "history.json").read_text())
    if storage.is_uri(str(out_dir)):
        shutil.rmtree(out, ignore_errors=True)  # the scratch copy: the outputs are at out_dir
    fresh = [h for h in history if h.get("step_started", 0) >= started]
    adapter = storage.join(str(out_dir), "adapter") if storage.is_uri(str(out_dir)) else str(out / "adapter")
    return {**summary, "adapter_dir": adapter, "metrics": history[-1] if history else {},
            "seconds": time.time() - started, "steps_run": len(fresh), "job": sid, "outputs_uri": outputs,
            "first_step_s": min(h["step_started"] for h in fresh) - started if fresh else None,
            "loop_seconds": sum(h["step_seconds"] for h in fresh)}


def sweep_on_cluster(run: RunConfig, address: str, data_dir: str | Path, calib_dir: str | Path,
                     out_dir: str | Path, run_id: str, run_key: str | None,
                     data_uri: str | None = None, calib_uri: str | None = None) -> dict:
    """The sweep's trials as one Ray job (Tune drives the trials across the cluster's nodes); its tables,
    plots, best adapter and summary land in ``out_dir``. Returns the summary."""
    sid, outputs = _submit_step("sweep", run, address, data_dir, calib_dir, run_id, run_key, data_uri, calib_uri, [])
    out = _download(outputs, out_dir)
    summary = json.loads((out / "sweep_summary.json").read_text())
    summary["job"] = sid  # which Ray job ran the trials, kept with the step's outputs
    text = json.dumps(summary, indent=2, default=str)
    if storage.is_uri(str(out_dir)):
        storage.write_text(storage.join(str(out_dir), "sweep_summary.json"), text)
        shutil.rmtree(out, ignore_errors=True)  # the scratch copy: the outputs are at out_dir
    else:
        (out / "sweep_summary.json").write_text(text)
    return summary
