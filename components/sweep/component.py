"""KFP component for the sweep: Ray Tune trials over K, learning rates and method on prepared data."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def sweep(config_yaml: str, overrides: str, mlflow_run_id: str, pipeline_run: str, data: Input[Dataset],
          calibration: Input[Artifact], results: Output[Artifact], results_table: Output[Markdown],
          k_sensitivity: Output[HTML], learning_curves: Output[HTML],
          best_adapter: Output[Model]) -> NamedTuple("SweepOutputs", best_config_yaml=str, registry_tags=str):
    """A Ray Tune sweep of the method, K and the learning rates; the trials reuse the one Fisher report in
    ``calibration``. Tune's experiment lives under ``storage.uri`` (per pipeline run), so a retried pod restores
    it; with a Ray cluster configured, the trials run there as one Ray job.

    Args:
        config_yaml: the effective run config as YAML (the resolve step's ``run_config``).
        overrides: section.field=value items applied over it ("" in the pipeline: resolve applied them).
        mlflow_run_id: the pipeline run's MLflow run (each trial is a child run of it).
        pipeline_run: the KFP run's name: the key of Tune's experiment under ``storage.uri``.
        data: the prepared splits.
        calibration: the Fisher report every trial selects its K layers from.

    Returns:
        results: ``results.csv``, ``results.md`` and ``sweep_summary.json``.
        results_table: every trial's method, K, learning rates, status and validation loss.
        k_sensitivity: the validation loss against K per method.
        learning_curves: every trial's validation loss per step.
        best_adapter: the best trial's adapter.
        best_config_yaml: the best trial's run config (method, K, learning rates), for evaluate and register.
        registry_tags: JSON of the tags naming the best trial.
    """
    import json
    import shutil
    from collections import namedtuple
    from pathlib import Path

    import yaml

    from components.artifact_html import png_to_html
    from pipelines.config.overrides import split_overrides
    from pipelines.config.run_config import parse_run_config
    from pipelines.runtime.interruption import one_line_command
    from pipelines.steps import stages
    from pipelines.sweep.driver import sweep_trials
    from pipelines.sweep.tune_runner import best_run_config, sweep_tags

    with one_line_command():
        run = parse_run_config(config_yaml, split_overrides(overrides))
        stages.log_inputs(run, data.path, calibration.path, mlflow_run_id)
        summary = sweep_trials(run, data.path, calibration.path, results.path, mlflow_run_id,
                               run_key=pipeline_run, data_uri=data.uri, calib_uri=calibration.uri)
    if not summary["finished"]:
        raise RuntimeError(f"only {summary['finished_trials']} of {summary['planned_trials']} trials finished")
    out = Path(results.path)
    shutil.copy(out / "results.md", results_table.path)
    png_to_html(out / "k_sensitivity.png", k_sensitivity.path, "Metric vs layer budget K")
    png_to_html(out / "learning_curves.png", learning_curves.path, "Learning curves")
    best_run = best_run_config(run, summary)
    shutil.copytree(out / "best" / "adapter", best_adapter.path, dirs_exist_ok=True)
    best_adapter.metadata.update({k: summary["best"][k] for k in ("trial_id", "method", "K", "lr", "stiefel_lr")})
    outputs = namedtuple("SweepOutputs", ["best_config_yaml", "registry_tags"])
    return outputs(yaml.safe_dump(best_run.to_dict()), json.dumps(sweep_tags(summary)))
