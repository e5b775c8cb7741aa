"""The sweep as a KFP v2 DAG: data prep -> Fisher calibration (once) -> Ray Tune trials -> lm-eval of the
best trial -> merge/register (tagged with the sweep and the trial). Compiled to
``pipelines/kubeflow/fora_sweep_pipeline.yaml`` by ``fora compile --output-dir pipelines/kubeflow`` (checked in; a test fails if it is stale).

The search space is the config's ``sweep`` section; the form shows its grid as typed parameters
(``sweep_methods``, ``sweep_layer_budgets``, ``sweep_lr``, ``sweep_stiefel_lr``, ``num_samples``, ``max_trials``: JSON
lists such as ``[0.25, 0.5, 1.0]``) beside the model, data, steps and registry fields
(``pipelines/config/form.py``); ``config_yaml`` < changed typed fields < ``overrides``, as in the main pipeline. With ``storage.uri`` set, Tune's state
lives there (per pipeline run), so a retried sweep pod resumes; with a Ray cluster configured, the trials
run there as one Ray job.
"""

from pathlib import Path

from kfp import compiler, dsl

from components.evaluate.component import evaluate
from components.register.component import register
from components.sweep.component import sweep

from ..config.form import SWEEP_FORM, form_defaults
from ..config.run_config import RunConfig
from .fora_pipeline import (
    FIXED_PARAMETERS,
    REQUIREMENTS,
    configure_task,
    default_run,
    deploy_after,
    prepare_and_calibrate,
    resolve_run,
)
from .images import Images, retag
from .typed_form import form_values, typed_pipeline

SWEEP_PIPELINE_YAML = Path(__file__).with_suffix(".yaml")


def make_sweep_pipeline(run: RunConfig | None = None):
    """The sweep pipeline function, its pods sized by ``run.resources``."""
    run = run or default_run()

    def body(p: dict) -> None:
        res = resolve_run(run, p["config_yaml"], p["overrides"], False, form_values(p, SWEEP_FORM), SWEEP_FORM,
                          "sweep")
        prep, calib, common = prepare_and_calibrate(run, res, "Fisher calibration (once for all trials)")

        trials = sweep(data=prep.outputs["data"], calibration=calib.outputs["calibration"],
                       pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER, **common)
        configure_task(trials, run.resources.sweep, mlflow=True, ray=True).set_display_name("Ray Tune sweep").set_caching_options(False)

        best = {"config_yaml": trials.outputs["best_config_yaml"], "overrides": "",
                "mlflow_run_id": res.outputs["mlflow_run_id"]}
        scored = evaluate(data=prep.outputs["data"], adapter=trials.outputs["best_adapter"], **best)
        configure_task(scored, run.resources.evaluate, mlflow=True).set_display_name("lm-eval: base vs best trial")
        scored.set_caching_options(False)
        reg = register(data=prep.outputs["data"], calibration=calib.outputs["calibration"],
                       adapter=trials.outputs["best_adapter"], evaluation=scored.outputs["evaluation"],
                       registry_tags=trials.outputs["registry_tags"], **best)
        configure_task(reg, run.resources.register, mlflow=True).set_display_name("merge and register the best trial")
        reg.set_caching_options(False)
        deploy_after(run, reg, best)

    return typed_pipeline("fora-sweep-pipeline",
                          f"FoRA sweep: Ray Tune over the layer budget K, learning rates and method. {REQUIREMENTS}",
                          FIXED_PARAMETERS, SWEEP_FORM, form_defaults(run, SWEEP_FORM), body)


fora_sweep_pipeline = make_sweep_pipeline()


def compile_sweep_pipeline(path: str | Path = SWEEP_PIPELINE_YAML, run: RunConfig | None = None,
                           images: Images | None = None) -> Path:
    compiler.Compiler().compile(make_sweep_pipeline(run), package_path=str(path))
    return retag(Path(path), images) if images else Path(path)
