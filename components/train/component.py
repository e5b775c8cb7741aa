"""KFP component for step 3: FoRA fine-tune on Ray Train -> PEFT adapter."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(config_yaml: str, overrides: str, mlflow_run_id: str, pipeline_run: str, data: Input[Dataset],
          calibration: Input[Artifact], adapter: Output[Model], loss_curve: Output[HTML],
          metrics: Output[Metrics]):
    """FoRA at the calibrated layers with Ray Train. With a Ray cluster's Jobs API in ``RAY_ADDRESS`` (or
    ``ray.address``) the training is submitted there as a Ray job, its inputs staged under ``storage.uri``;
    otherwise a one-node Ray starts inside this pod. Checkpoints go to the pipeline run's own namespace under
    ``train.checkpoint_dir`` (s3:// on a cluster), so a retried pod resumes.

    Args:
        config_yaml: the effective run config as YAML (the resolve step's ``run_config``).
        overrides: section.field=value items applied over it ("" in the pipeline: resolve applied them).
        mlflow_run_id: the pipeline run's MLflow run (resolve opened it); step metrics are logged there.
        pipeline_run: the KFP run's name: the checkpoint namespace's key (a retry of the same run resumes).
        data: the prepared splits.
        calibration: the Fisher report with the selected layers.

    Returns:
        adapter: the trained PEFT LoRA adapter (metadata: method, base model, layers).
        loss_curve: training and validation loss per step.
        metrics: the last step's loss, validation loss and throughput; the step whose adapter was kept.
    """
    import shutil
    from pathlib import Path

    from components.artifact_html import png_to_html
    from pipelines.config.overrides import split_overrides
    from pipelines.config.run_config import parse_run_config
    from pipelines.runtime.interruption import one_line_command
    from pipelines.steps import stages

    with one_line_command():
        run = parse_run_config(config_yaml, split_overrides(overrides))
        stages.log_inputs(run, data.path, calibration.path, mlflow_run_id)
        work = Path(adapter.path).parent / "train-work"
        trained = stages.train(run, data.path, calibration.path, work, mlflow_run_id, run_key=pipeline_run,
                               data_uri=data.uri, calib_uri=calibration.uri)
    shutil.copytree(trained["adapter_dir"], adapter.path, dirs_exist_ok=True)
    png_to_html(work / "loss_curve.png", loss_curve.path, "Training loss")
    adapter.metadata.update({"method": run.fora.method, "base_model": run.model, "format": "peft-lora",
                             "checkpoints": trained["checkpoints"], "ray_job": trained.get("job", "")})
    for key in ("loss", "val_loss", "tokens_per_s", "orthogonality_error"):
        if key in trained["metrics"]:
            metrics.log_metric(key, trained["metrics"][key])
    metrics.log_metric("train_seconds", trained["seconds"])
    metrics.log_metric("steps_run", trained["steps_run"])
    metrics.log_metric("chosen_step", trained["chosen_step"])
