"""KFP component for step 2: Fisher calibration -> report, selected layers, profile plot."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def calibrate(config_yaml: str, overrides: str, data_fingerprint: str, data: Input[Dataset],
              calibration: Output[Artifact], fisher_profile: Output[HTML], metrics: Output[Metrics]) -> str:
    """Diagonal empirical Fisher per decoder layer; returns the selected layers as JSON. Cached on the data
    source's fingerprint like data prep; logged to MLflow by the train step."""
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
