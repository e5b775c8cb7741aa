"""KFP component for step 5: merge the adapter, log everything to MLflow, register, maybe promote."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(config_yaml: str, overrides: str, mlflow_run_id: str, data: Input[Dataset],
             calibration: Input[Artifact], adapter: Input[Model], evaluation: Input[Artifact],
             merged: Output[Model], registration: Output[Markdown], registry_tags: str = "{}") -> int:
    """Registers a model version tagged with method, K, layers, data hash and base model; moves the
    ``champion`` alias only if a paired test on the evaluation's items says it beats the champion and it breaks
    no ``register.guards``.

    Args:
        config_yaml: the effective run config as YAML (the resolve step's ``run_config``).
        overrides: section.field=value items applied over it ("" in the pipeline: resolve applied them).
        mlflow_run_id: the pipeline run's MLflow run (the version's source run).
        data: the prepared data (its card and hash become tags).
        calibration: the Fisher report (the selected layers become a tag).
        adapter: the adapter to register (merged into the base unless ``register.artifact: adapter``).
        evaluation: the evaluate step's results and per-item scores (the paired test's input).
        registry_tags: JSON of extra tags on the version (the sweep pipeline names the trial).

    Returns:
        merged: the registered model folder.
        registration: the decision as Markdown (version, promote or keep, the test and why).
        Output: the registered version's number.
    """
    import json

    from pipelines.config.overrides import split_overrides
    from pipelines.config.run_config import parse_run_config
    from pipelines.runtime.interruption import one_line_command
    from pipelines.steps import stages

    with one_line_command():
        run = parse_run_config(config_yaml, split_overrides(overrides))
        reg = stages.register(run, data.path, calibration.path, adapter.path, evaluation.path, merged.path,
                              mlflow_run_id, extra_tags=json.loads(registry_tags))
    merged.metadata.update({"registered_model": run.register.model_name, "version": reg["version"]})
    merged.metadata.update({"promotion": reg["action"]})
    with open(registration.path, "w") as f:
        f.write(f"Registered **{run.register.model_name}** version {reg['version']}: **{reg['action']}** "
                f"(previous champion: {reg['previous'] or 'none'}). {reg['reason']}\n")
    return reg["version"]
