"""Step 3, train: FoRA at the selected layers, as a Ray Train ``TorchTrainer`` job (or in-process).

The loop itself is ``pipelines/training/`` (the same loop a sweep trial runs). This driver picks the run's
checkpoint namespace (``runtime/checkpoints.py``: same config, data and layers resume, anything else starts
fresh), runs the loop in-process (``train.use_ray: false``) or on Ray Train (``training/trainer.py``), and writes
the final adapter, history and loss curve.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ..config.run_config import RunConfig
from ..runtime import checkpoints, interruption, storage
from ..runtime.ray_runtime import check_placement, init_ray
from ..training import divergence
from ..training.loop import train_loop_per_worker
from ..training.loop_config import LoopConfig
from ..training.outputs import write_outputs
from ..training.trainer import build_torch_trainer


def run_training(run: RunConfig, data_dir: str | Path, layers: list[int], out_dir: str | Path,
                 mlflow_run_id: str | None = None, progress: bool = False, run_key: str | None = None,
                 calib_dir: str | Path | None = None, hooks: Sequence = ()) -> dict:
    """Fit the loop and write the final adapter, history and loss curve to ``out_dir``.

    Args:
        run: the validated run config.
        data_dir: the prepared data (a folder or an s3:// URI).
        layers: the decoder layers to adapt (the calibrate step's selection).
        out_dir: where the adapter, ``history.json``, ``loss_curve.png`` and ``train_summary.json`` go (a folder
            or an s3:// URI).
        mlflow_run_id: the MLflow run the step metrics are logged to (rank 0).
        progress: a tqdm bar instead of a line every tenth of the run.
        run_key: this run's key in its checkpoint namespace (the KFP run, or the local output folder).
        calib_dir: the calibration folder (FILet methods read their energies there).
        hooks: test-only step hooks (``training/faults.py``).

    Returns:
        {"adapter_dir", "metrics" (the last step's), "seconds" (wall), "steps_run" (this call), "first_step_s"
        (stage start -> first step start: Ray start-up, worker group, model load), "loop_seconds" (the steps
        themselves), "checkpoints" (the namespace), "resumed_from_step"}.

    Raises:
        TrainingDiverged: a non-finite loss, gradient or parameter stopped the run (nothing was kept).
    """
    t0, started = time.perf_counter(), time.time()
    data = storage.absolute(data_dir)
    data_hash = storage.read_json(storage.join(data, "data_card.json"))["content_hash"]
    ns = checkpoints.choose_namespace(run, run_key, data_hash, list(layers))
    found = ns.latest
    interruption.progress(checkpoints=ns.path, max_steps=run.train.max_steps,
                          step=(int(found["step"]) if found else 0) if not run.train.use_ray else None)
    loop = LoopConfig(run=run, data_dir=data, layers=list(layers), where="ray" if run.train.use_ray else "local",
                      calib_dir=storage.absolute(calib_dir) if calib_dir is not None else None,
                      storage=ns.path, resume_from=found["checkpoint"] if found else None, namespace=ns.path,
                      fingerprint=ns.fingerprint, run_key=ns.run_key, tracking_uri=run.tracking_uri,
                      mlflow_run_id=mlflow_run_id, progress=progress, hooks=tuple(hooks))
    scratch = Path(tempfile.mkdtemp(prefix="fora-train-"))
    try:
        if ns.state == "finished":
            final = storage.localize(found["checkpoint"], scratch / "final")
        elif not run.train.use_ray:
            divergence.raise_if_diverged(train_loop_per_worker(loop), run.to_dict(), ns.path)
            last = checkpoints.latest(ns.path)
            final = storage.localize(last["checkpoint"], scratch / "final") if last else None
        else:
            final = _fit_with_ray(run, loop, ns, scratch)
        seconds = time.perf_counter() - t0
        if final is None:
            raise RuntimeError("training finished without a checkpoint")
        summary = write_outputs(run, Path(final), out_dir, scratch, ns, found)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    history = summary.pop("history")
    fresh = [h for h in history if h.get("step_started", 0) >= started]
    return {**summary, "metrics": history[-1] if history else {}, "seconds": seconds, "steps_run": len(fresh),
            "first_step_s": min(h["step_started"] for h in fresh) - started if fresh else None,
            "loop_seconds": sum(h["step_seconds"] for h in fresh)}


def _fit_with_ray(run: RunConfig, loop: LoopConfig, ns, scratch: Path) -> Path | None:
    check_placement(run, init_ray(run))
    trainer = build_torch_trainer(run, loop, ns.name, ns.root, keep_checkpoints=2)
    divergence.take_marker(ns.path)  # a stale one from an earlier attempt
    result = trainer.fit()  # [ray]
    divergence.raise_if_diverged(divergence.take_marker(ns.path), run.to_dict(), ns.path)
    if result.checkpoint is None:
        return None
    return Path(result.checkpoint.to_directory(str(scratch / "final")))
