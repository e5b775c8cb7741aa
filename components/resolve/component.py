"""KFP component for step 0 (never cached): open the pipeline run's MLflow run, fingerprint the data source
and the recipe, and decide whether this run needs to train at all."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def resolve(config_yaml: str, overrides: str, pipeline_run: str, scheduled: bool, decision: Output[Markdown]
            ) -> NamedTuple("ResolveOutputs", Output=bool, mlflow_run_id=str, data_fingerprint=str):
    """Returns ``Output``: whether to train (false when the champion, or a judged challenger, was trained on
    this very data and recipe and ``register.skip_unchanged`` allows skipping: by default scheduled runs
    only), the MLflow run every later step logs to, and the source's fingerprint (data prep and calibration
    are cached on it: a cache hit means the same data). The flag is named ``Output`` because the local KFP
    runner resolves a ``dsl.If`` condition only on an output of that name."""
    from collections import namedtuple

    from pipelines.config.overrides import split_overrides
    from pipelines.config.run_config import parse_run_config
    from pipelines.runtime.interruption import one_line_command
    from pipelines.steps import stages

    with one_line_command():
        run = parse_run_config(config_yaml, split_overrides(overrides))
        r = stages.resolve(run, run_name=f"{run.name} ({pipeline_run})", scheduled=scheduled)
    with open(decision.path, "w") as f:
        f.write(f"Data source `{run.data.source}`: fingerprint `{r['source_fingerprint']}`.\n\n"
                f"**{'Skipped' if r['skip'] else 'Training'}**: {r['reason']}.\n")
    out = namedtuple("ResolveOutputs", ["Output", "mlflow_run_id", "data_fingerprint"])
    return out(not r["skip"], r["run_id"], r["source_fingerprint"])
