"""What one worker's training loop needs, typed: the run, its data and layers, and where the loop runs.

A Ray ``TorchTrainer`` hands its ``train_loop_config`` (a dict) to every worker; ours is ``{"loop":
LoopConfig}`` (pickled by Ray as any dataclass). The run is the validated :class:`RunConfig`; nothing here is a
user setting, and test-only fault hooks (``faults.py``) ride in ``hooks``, never in the run config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..config.run_config import RunConfig

Where = Literal["local", "ray", "tune"]


@dataclass(frozen=True)
class LoopConfig:
    """One training loop.

    Attributes:
        run: the validated run config (method, lrs, steps, batch, checkpoints).
        data_dir: the prepared data (a folder or an s3:// URI: a worker on another machine reads it from storage).
        layers: the decoder layers to adapt.
        where: ``local`` (in-process, no Ray), ``ray`` (a Ray Train worker) or ``tune`` (a one-worker sweep trial
            in the Tune trial's own process).
        calib_dir: the calibration folder (FILet methods read their energies from it).
        storage: the checkpoint namespace an in-process loop writes to.
        resume_from: an unfinished checkpoint of this very run, found by the driver.
        namespace: the run's checkpoint namespace (a Ray worker that diverges leaves its marker there).
        fingerprint: the run's identity; a checkpoint of another fingerprint is not resumed.
        run_key: recorded in each checkpoint's meta.
        tracking_uri, mlflow_run_id: rank 0 logs the step metrics to this MLflow run.
        progress: a tqdm bar on rank 0 (else a line every tenth of the run).
        report_val_loss_every_step: a sweep's scheduler compares trials on every report, so the validation loss
            is carried forward between measurements.
        metrics_flush_timeout_s: how long the buffered MLflow logger waits for an outage to end at the close.
        hooks: test-only step hooks (``faults.py``).
    """

    run: RunConfig
    data_dir: str
    layers: list[int]
    where: Where = "local"
    calib_dir: str | None = None
    storage: str | None = None
    resume_from: str | None = None
    namespace: str | None = None
    fingerprint: str | None = None
    run_key: str | None = None
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    progress: bool = False
    report_val_loss_every_step: bool = False
    metrics_flush_timeout_s: float = 60.0
    hooks: tuple[Any, ...] = field(default_factory=tuple)

    def for_ray(self) -> dict[str, Any]:
        """The ``train_loop_config`` of a ``TorchTrainer`` (Ray wants a dict)."""
        return {"loop": self}

    @staticmethod
    def of(config: dict[str, Any] | LoopConfig) -> LoopConfig:
        return config if isinstance(config, LoopConfig) else config["loop"]
