"""The FoRA pipeline as a KFP v2 DAG: data prep -> Fisher calibration -> Ray Train FoRA -> lm-eval ->
merge/register. Compiled to ``pipelines/fora_pipeline.yaml`` by ``fora compile`` (checked in; a test fails
if it is stale). Upload that file in the Kubeflow UI, or ``fora submit --host URL CONFIG``.

Parameters: ``config_yaml`` (a whole run config; the default is ``configs/cluster.yaml``) and
``overrides`` (``section.field=value`` items: one per line, or separated by commas before each new
``key=``, or a JSON list as ``fora submit`` sends them), so a scheduled run or a UI user can change a field
without editing YAML. Each step's pod gets the resources of the compiling config's ``resources`` section
(``pipelines/resources.py``), runs as UID 1000 (non-root), and reads its credentials from Secrets:
``fora-s3-credentials`` (required), ``fora-mlflow-credentials`` (required) and ``fora-ray-token`` (only
needed with a Ray cluster); service addresses come from the ``fora-services`` ConfigMap.

Caching: data prep and calibration are cached (their outputs are a function of the config); train,
evaluate and register are not (register has side effects; train resumes from its own checkpoints, and a
KFP retry of its pod picks them up: the pipeline run's id names its checkpoint namespace).
"""

import json
from pathlib import Path

import yaml
from kfp import compiler, dsl, kubernetes

from components.calibrate.component import calibrate
from components.data_prep.component import data_prep
from components.evaluate.component import evaluate
from components.register.component import register
from components.train.component import train
from pipelines.resources import StepResources, apply_to_task
from pipelines.run_config import RunConfig, load_run_config

ROOT = Path(__file__).resolve().parent.parent
PIPELINE_YAML = Path(__file__).with_suffix(".yaml")
DEFAULT_CONFIG_PATH = ROOT / "configs" / "cluster.yaml"
# one line (JSON is YAML): KFP copies defaults into the spec's header comment, and a multi-line default
# would break that comment and with it the YAML file
DEFAULT_CONFIG = json.dumps(yaml.safe_load(DEFAULT_CONFIG_PATH.read_text()))

# k8s/ creates these in the pipeline namespace
S3_SECRET = "fora-s3-credentials"
MLFLOW_SECRET = "fora-mlflow-credentials"
RAY_TOKEN_SECRET = "fora-ray-token"
SERVICES_CONFIG_MAP = "fora-services"
POD_UID = 1000  # the image's non-root user


def configure_task(task: dsl.PipelineTask, res: StepResources) -> dsl.PipelineTask:
    """Resources from the config; non-root; credentials from Secrets and service URLs from a ConfigMap
    (by name only: no credential is ever written into the compiled spec)."""
    apply_to_task(task, res)
    kubernetes.set_security_context(task, run_as_user=POD_UID, run_as_group=POD_UID, run_as_non_root=True)
    kubernetes.use_secret_as_env(task, S3_SECRET, {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                                                   "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"})
    kubernetes.use_secret_as_env(task, MLFLOW_SECRET, {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                                                       "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"})
    kubernetes.use_secret_as_env(task, RAY_TOKEN_SECRET, {"RAY_AUTH_TOKEN": "RAY_AUTH_TOKEN"}, optional=True)
    kubernetes.use_config_map_as_env(task, SERVICES_CONFIG_MAP, {
        "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
        "RAY_ADDRESS": "RAY_ADDRESS"}, optional=True)
    return task


def default_run() -> RunConfig:
    return load_run_config(DEFAULT_CONFIG_PATH)


def prepare_and_calibrate(run: RunConfig, config_yaml: str, overrides: str, calibrate_name: str):
    """The head both DAGs share: data prep (which opens the pipeline run's MLflow run), then the Fisher pass.
    Returns (prep task, calibrate task, the arguments every later step takes)."""
    prep = data_prep(config_yaml=config_yaml, overrides=overrides, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
    configure_task(prep, run.resources.data_prep).set_display_name("data prep")
    common = {"config_yaml": config_yaml, "overrides": overrides, "mlflow_run_id": prep.outputs["Output"]}
    calib = calibrate(data=prep.outputs["data"], **common)
    configure_task(calib, run.resources.calibrate).set_display_name(calibrate_name)
    return prep, calib, common


def make_pipeline(run: RunConfig | None = None):
    """The pipeline function, its pods sized by ``run.resources`` (default: ``configs/cluster.yaml``)."""
    run = run or default_run()

    @dsl.pipeline(name="fora-pipeline", description="FoRA fine-tuning: Fisher layer selection + Stiefel LoRA")
    def fora_pipeline(config_yaml: str = DEFAULT_CONFIG, overrides: str = ""):
        prep, calib, common = prepare_and_calibrate(run, config_yaml, overrides, "Fisher calibration")

        fit = train(data=prep.outputs["data"], calibration=calib.outputs["calibration"],
                    pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER, **common)
        configure_task(fit, run.resources.train).set_display_name("FoRA fine-tune (Ray Train)")
        fit.set_caching_options(False)

        scored = evaluate(data=prep.outputs["data"], adapter=fit.outputs["adapter"], **common)
        configure_task(scored, run.resources.evaluate).set_display_name("lm-eval: base vs tuned")
        scored.set_caching_options(False)

        reg = register(data=prep.outputs["data"], calibration=calib.outputs["calibration"],
                       adapter=fit.outputs["adapter"], evaluation=scored.outputs["evaluation"], **common)
        configure_task(reg, run.resources.register).set_display_name("merge and register").set_caching_options(False)

    return fora_pipeline


fora_pipeline = make_pipeline()


def compile_pipeline(path: str | Path = PIPELINE_YAML, run: RunConfig | None = None) -> Path:
    """Write the pipeline spec YAML with ``run``'s resources; returns its path."""
    compiler.Compiler().compile(make_pipeline(run), package_path=str(path))
    return Path(path)
