"""KFP component for step 0 (never cached): open the pipeline run's MLflow run, fingerprint the data source
and the recipe, and decide whether this run needs to train at all."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def resolve(config_yaml: str, overrides: str, form_defaults: dict, form_name: str, pipeline_run: str,
            scheduled: bool, decision: Output[Markdown], model: str = None, data_source: str = None,
            data_format: str = None, max_steps: int = 0, method: str = None, layer_budget: float = None,
            rank: int = 0, lr: float = None, stiefel_lr: float = None, eval_tasks: list = None,
            heldout_metrics: list = None, register_metric: str = None, approval: str = None,
            registered_model_name: str = None, sweep_methods: list = None, sweep_layer_budgets: list = None,
            sweep_lr: list = None, sweep_stiefel_lr: list = None, num_samples: int = 0, max_trials: int = 0
            ) -> NamedTuple("ResolveOutputs", Output=bool, mlflow_run_id=str, data_fingerprint=str, run_config=str):
    """Reads the typed form (the keyword inputs: the fields of ``pipelines.config.form``'s ``RUN_FORM`` or
    ``SWEEP_FORM`` by ``form_name``, each its own typed input so that KFP passes lists and quotes intact; the
    pipeline passes every field of its form, so these defaults are never read (integers default to 0 because the
    local runner cannot cast a null integer); a value equal to its compiled default in ``form_defaults`` leaves
    ``config_yaml``'s value) and ``overrides``
    into one validated config: ``run_config``, which every later step takes. Returns ``Output``: whether to train
    (false when the champion, or a judged challenger, was trained on this very data and recipe and
    ``register.skip_unchanged`` allows skipping: by default scheduled runs only), the MLflow run every later
    step logs to, and the source's fingerprint (data prep and calibration are cached on it: a cache hit means
    the same data). The flag is named ``Output`` because the local KFP runner resolves a ``dsl.If`` condition
    only on an output of that name."""
    given = dict(locals())  # first: only the inputs are local names yet
    from collections import namedtuple

    from pipelines.config.form import FORMS, resolve_form
    from pipelines.config.overrides import split_overrides
    from pipelines.runtime.interruption import one_line_command
    from pipelines.steps import stages

    with one_line_command():
        fields = FORMS[form_name]
        form = {f.name: given[f.name] for f in fields}
        run, run_config, changed = resolve_form(config_yaml, split_overrides(overrides), form, form_defaults, fields)
        r = stages.resolve(run, run_name=f"{run.name} ({pipeline_run})", scheduled=scheduled)
    from_form = ", ".join(f"`{path}` = `{value}`" for path, value in changed.items()) or "none changed"
    with open(decision.path, "w") as f:
        f.write(f"Data source `{run.data.source}`: fingerprint `{r['source_fingerprint']}`.\n\n"
                f"Typed parameters applied over `config_yaml`: {from_form}.\n\n"
                f"**{'Skipped' if r['skip'] else 'Training'}**: {r['reason']}.\n")
    out = namedtuple("ResolveOutputs", ["Output", "mlflow_run_id", "data_fingerprint", "run_config"])
    return out(not r["skip"], r["run_id"], r["source_fingerprint"], run_config)
