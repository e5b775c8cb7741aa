"""KFP component for step 4: lm-eval tasks, the held-out data (loss, answers scored by the user's metrics),
base vs tuned vs champion, and the adapter's diagnostics (general-text perplexity, KL drift, effective rank,
spectrum plot in ``evaluation``)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(config_yaml: str, overrides: str, mlflow_run_id: str, data: Input[Dataset], adapter: Input[Model],
             evaluation: Output[Artifact], scores: Output[Metrics], table: Output[Markdown]) -> float:
    """Scores the base model, the tuned model and the registry's champion on the same items (``eval`` section),
    with the tuned model's diagnostics.

    Args:
        config_yaml: the effective run config as YAML (the resolve step's ``run_config``).
        overrides: section.field=value items applied over it ("" in the pipeline: resolve applied them).
        mlflow_run_id: the pipeline run's MLflow run; every metric and the answers table are logged there.
        data: the prepared splits (the held-out data comes from ``validation.jsonl`` by default).
        adapter: the trained adapter.

    Returns:
        evaluation: ``eval_results.json``, ``item_scores.json``, the table and the adapter report.
        scores: every metric per model (``<model>_<metric>``), the diagnostics among them.
        table: the metrics of base, tuned and champion side by side.
        Output: the tuned model's value of ``register.metric`` (NaN when the evaluation did not produce it).
    """
    import shutil
    from pathlib import Path

    from pipelines.config.overrides import split_overrides
    from pipelines.config.run_config import parse_run_config
    from pipelines.runtime.interruption import one_line_command
    from pipelines.steps import stages

    with one_line_command():
        run = parse_run_config(config_yaml, split_overrides(overrides))
        results = stages.evaluate(run, data.path, adapter.path, evaluation.path, mlflow_run_id)
    shutil.copy(Path(evaluation.path) / "eval_table.md", table.path)
    import math

    for who in ("base", "tuned"):
        r = results.get(who)
        if r is None:
            continue
        for name, value in r["metrics"].items():  # the scores and the diagnostics (DIAGNOSTIC_METRICS)
            if math.isfinite(value):
                scores.log_metric(f"{who}_{name.replace('/', '_')}", value)
    return float(results["tuned"]["metrics"].get(run.register.metric, float("nan")))
