"""KFP component for step 1: training source -> tokenized splits + data card."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def data_prep(config_yaml: str, overrides: str, pipeline_run: str, data: Output[Dataset],
              data_card: Output[Markdown]) -> str:
    """Read ``data.source``; write train/validation/calibration JSONL and the data card.

    Returns the id of the MLflow run that every later step logs to (one per pipeline run).
    """
    import shutil
    from pathlib import Path

    from pipelines import stages
    from pipelines.errors import one_line_user_errors
    from pipelines.run_config import parse_run_config, split_overrides

    with one_line_user_errors():
        run = parse_run_config(config_yaml, split_overrides(overrides))
        run_id = stages.start_tracking(run, run_name=f"{run.name} ({pipeline_run})")
        card = stages.data_prep(run, data.path, run_id)
    shutil.copy(Path(data.path) / "data_card.md", data_card.path)
    data.metadata.update({**card["counts"], "content_hash": card["content_hash"], "source": run.data.source})
    return run_id
