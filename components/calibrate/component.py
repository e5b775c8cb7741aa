"""KFP component for step 2: Fisher calibration -> report, selected layers, profile plot."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def calibrate(config_yaml: str, overrides: str, data_fingerprint: str, data: Input[Dataset],
              calibration: Output[Artifact], fisher_profile: Output[HTML], metrics: Output[Metrics]) -> str:
    """The diagonal Fisher score of every decoder layer and the top-K selection. Cached on the data source's
    fingerprint like data prep; logged to MLflow by the train step.

    Args:
        config_yaml: the effective run config as YAML (the resolve step's ``run_config``).
        overrides: section.field=value items applied over it ("" in the pipeline: resolve applied them).
        data_fingerprint: the data source's fingerprint from resolve: the cache key.
        data: the prepared splits (this step reads ``calibration.jsonl``).

    Returns:
        calibration: ``fisher_report.json`` (scores, ranking, selected layers) and the FILet energies when the
            method uses them.
        fisher_profile: the per-layer Fisher profile with the selected layers highlighted.
        metrics: the number of layers selected and the pass's seconds.
        Output: the selected layers as a JSON list.
    """
    import json
    from pathlib import Path

    from components.artifact_html import png_to_html
    from pipelines.config.overrides import split_overrides
    from pipelines.config.run_config import parse_run_config
    from pipelines.runtime.interruption import one_line_command
    from pipelines.steps import stages

    with one_line_command():
        run = parse_run_config(config_yaml, split_overrides(overrides))
        calib = stages.calibrate(run, data.path, calibration.path, None)
    png_to_html(Path(calibration.path) / "fisher_profile.png", fisher_profile.path, "Fisher layer profile")
    report = calib["report"]
    metrics.log_metric("layers_selected", len(calib["selected_layers"]))
    metrics.log_metric("layers_total", report.num_layers)
    metrics.log_metric("fisher_seconds", report.seconds)
    calibration.metadata["selected_layers"] = calib["selected_layers"]
    return json.dumps(calib["selected_layers"])
