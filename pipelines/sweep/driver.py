"""``fora sweep`` from start to end: data and the Fisher pass once (reused on a restart with the same inputs),
the trials (``tune_runner.py``; a Ray job on the cluster when ``ray.address`` is a Jobs API), and the best trial
evaluated and registered like a pipeline run's model."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from ..config.run_config import RunConfig, needs_filet
from ..runtime import atomic
from ..runtime.models import model_source
from ..steps import stages
from ..training.calibration_artifacts import load_selection
from .trials import plan
from .tune_runner import best_trial, sweep_tags, tune_trials

log = logging.getLogger("fora")


def sweep_trials(run: RunConfig, data_dir: str | Path, calib_dir: str | Path, out_dir: str | Path, run_id: str,
                 run_key: str | None = None, data_uri: str | None = None, calib_uri: str | None = None) -> dict:
    """The sweep's trials on prepared data (a Ray job on the cluster when configured, like ``train``);
    tables, plots, ``best/adapter`` and ``sweep_summary.json`` land in ``out_dir``."""
    from ..runtime.ray_runtime import jobs_api_address

    address = jobs_api_address(run)
    if address:
        from ..runtime.ray_jobs import sweep_on_cluster

        return sweep_on_cluster(run, address, data_dir, calib_dir, out_dir, run_id, run_key, data_uri, calib_uri)
    from .tune_runner import tune_trials_to

    return tune_trials_to(run, data_dir, calib_dir, out_dir, run_id, run_key)


def inputs_fingerprint(run: RunConfig) -> str:
    """What the data and the Fisher report depend on; a restart with the same value reuses them."""
    d = run.to_dict()
    key = {"model": d["model"], "dtype": d["dtype"], "data": d["data"], "fisher": d["fora"]["fisher"],
           "targets": d["fora"]["target_modules"], "seed": d["seed"], "filet": needs_filet(run)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def prepare_once(run: RunConfig, sweep_dir: Path, parent_run_id: str) -> tuple[dict, bool]:
    """Data prep + Fisher once; reused on a restart with the same inputs. Returns (calibration, computed)."""
    stamp = sweep_dir / "calibration" / "fingerprint.txt"
    report_path = sweep_dir / "calibration" / "fisher_report.json"
    if report_path.exists() and stamp.exists() and stamp.read_text() == inputs_fingerprint(run):
        log.info("reusing data and the Fisher report from %s", sweep_dir)
        return {"report": load_selection(report_path.parent)[0]}, False
    model, tokenizer = model_source(run).load()
    stages.data_prep(run, sweep_dir / "data", parent_run_id, tokenizer=tokenizer)
    calib = stages.calibrate(run, sweep_dir / "data", sweep_dir / "calibration", parent_run_id, model, tokenizer)
    atomic.write_text(stamp, inputs_fingerprint(run))
    return calib, True


def set_aside_if_inputs_changed(run: RunConfig, sweep_dir: Path) -> None:
    """A restart with other data settings (or another model, Fisher or targets) is a new sweep, not a resume:
    the old trials were trained on other data and the old MLflow parent run holds the old settings. The old
    folder is kept beside, renamed ``sweep.replaced-<UTC time>``; nothing is deleted."""
    stamp = sweep_dir / "calibration" / "fingerprint.txt"
    if not stamp.exists() or stamp.read_text() == inputs_fingerprint(run):
        return
    aside = sweep_dir.with_name(f"sweep.replaced-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    sweep_dir.rename(aside)
    log.warning("the data settings changed since the sweep in %s started (model, data, Fisher or target "
                "modules): starting a new sweep; the old one was moved to %s", sweep_dir, aside)


def run_sweep(run: RunConfig) -> dict:
    """The whole sweep (``fora sweep``); returns the summary (also in sweep/sweep_summary.json).

    Interrupted (Ctrl-C, a killed driver), the same command resumes it: Tune restores its experiment,
    finished trials are kept, unfinished ones start again, and the data and Fisher report are reused.
    """
    from ..preflight.checks import check_data
    from ..runtime.reachability import check_services

    t_start = time.perf_counter()
    plan(run)
    check_data(run)
    check_services(run)  # Ray, the bucket, MLflow: before any folder or MLflow run
    sweep_dir = run.out.resolve() / "sweep"
    set_aside_if_inputs_changed(run, sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    state_file = sweep_dir / "parent_run_id.txt"
    parent = state_file.read_text().strip() if state_file.exists() else stages.start_tracking(run, f"{run.name} sweep")
    atomic.write_text(state_file, parent)
    t = time.perf_counter()
    _, fisher_computed = prepare_once(run, sweep_dir, parent)
    prep_seconds = time.perf_counter() - t
    summary = tune_trials(run, sweep_dir / "data", sweep_dir / "calibration", sweep_dir, parent)
    summary["fisher_computed"] = fisher_computed
    summary["seconds"]["prepare"] = prep_seconds
    if summary["finished"] and run.sweep.register_best:
        t = time.perf_counter()
        best_run, adapter = best_trial(run, summary, sweep_dir / "best")
        results = stages.evaluate(best_run, sweep_dir / "data", adapter, sweep_dir / "best" / "eval", parent)
        reg = stages.register(best_run, sweep_dir / "data", sweep_dir / "calibration", adapter,
                              sweep_dir / "best" / "eval", sweep_dir / "best" / "merged", parent,
                              extra_tags=sweep_tags(summary))
        summary["best"].update(registration=reg, acc_avg={w: results[w]["metrics"].get("acc_avg")
                                                          for w in ("base", "tuned") if w in results})
        summary["seconds"]["evaluate_register"] = time.perf_counter() - t
    summary["seconds"]["total"] = time.perf_counter() - t_start
    atomic.write_text(sweep_dir / "sweep_summary.json", json.dumps(summary, indent=2, default=str))
    return summary
