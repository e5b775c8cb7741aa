"""The FoRA pipeline as a KFP v2 DAG: data prep -> Fisher calibration -> Ray Train FoRA -> lm-eval ->
merge/register. Compiled to ``pipelines/fora_pipeline.yaml`` by ``fora compile`` (checked in; a test fails
if it is stale). Upload that file in the Kubeflow UI, or ``fora submit --host URL CONFIG``.

Parameters: ``config_yaml`` (a whole run config; the default is ``configs/cluster.yaml``) and
``overrides`` (``section.field=value`` items separated by commas or newlines, e.g.
``train.max_steps=200, fora.layer_budget=0.25``), so a scheduled run or a UI user can change a field
without editing YAML.

Caching: data prep and calibration are cached (their outputs are a function of the config); train,
evaluate and register are not (register has side effects; train resumes from its own checkpoints, and a
KFP retry of its pod picks them up).
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

ROOT = Path(__file__).resolve().parent.parent
PIPELINE_YAML = Path(__file__).with_suffix(".yaml")
# one line (JSON is YAML): KFP copies defaults into the spec's header comment, and a multi-line default
# would break that comment and with it the YAML file
DEFAULT_CONFIG = json.dumps(yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text()))


# k8s/ creates these in the pipeline namespace; both are optional, so a cluster without them still runs
S3_SECRET = "fora-s3-credentials"
SERVICES_CONFIG_MAP = "fora-services"


def configure_task(task: dsl.PipelineTask, cpu: str, memory: str) -> dsl.PipelineTask:
    """Requests = limits (a Guaranteed pod); S3 keys from a Secret and service URLs from a ConfigMap."""
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
    kubernetes.use_secret_as_env(task, S3_SECRET, {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                                                   "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"},
                                 optional=True)
    kubernetes.use_config_map_as_env(task, SERVICES_CONFIG_MAP, {
        "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
        "RAY_ADDRESS": "RAY_ADDRESS"}, optional=True)
    return task


def prepare_and_calibrate(config_yaml: str, overrides: str, calibrate_name: str):
    """The head both DAGs share: data prep (which opens the pipeline run's MLflow run), then the Fisher pass.
    Returns (prep task, calibrate task, the arguments every later step takes)."""
    prep = data_prep(config_yaml=config_yaml, overrides=overrides, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
    configure_task(prep, "2", "8G").set_display_name("data prep")
    common = {"config_yaml": config_yaml, "overrides": overrides, "mlflow_run_id": prep.outputs["Output"]}
    calib = calibrate(data=prep.outputs["data"], **common)
    configure_task(calib, "4", "16G").set_display_name(calibrate_name)
    return prep, calib, common


def make_pipeline(train_gpus: int = 0):
    """The pipeline function; ``train_gpus`` > 0 requests that many NVIDIA GPUs for the train pod."""

    @dsl.pipeline(name="fora-pipeline", description="FoRA fine-tuning: Fisher layer selection + Stiefel LoRA")
    def fora_pipeline(config_yaml: str = DEFAULT_CONFIG, overrides: str = ""):
        prep, calib, common = prepare_and_calibrate(config_yaml, overrides, "Fisher calibration")

        fit = train(data=prep.outputs["data"], calibration=calib.outputs["calibration"], **common)
        configure_task(fit, "8", "32G").set_display_name("FoRA fine-tune (Ray Train)")
        fit.set_retry(num_retries=2, backoff_duration="60s")
        fit.set_caching_options(False)
        kubernetes.empty_dir_mount(fit, "shm", "/dev/shm", medium="Memory", size_limit="8Gi")  # Ray object store
        if train_gpus:
            fit.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(train_gpus)

        scored = evaluate(data=prep.outputs["data"], adapter=fit.outputs["adapter"], **common)
        configure_task(scored, "4", "16G").set_display_name("lm-eval: base vs tuned").set_caching_options(False)

        reg = register(data=prep.outputs["data"], calibration=calib.outputs["calibration"],
                       adapter=fit.outputs["adapter"], evaluation=scored.outputs["evaluation"], **common)
        configure_task(reg, "2", "16G").set_display_name("merge and register").set_caching_options(False)

    return fora_pipeline


fora_pipeline = make_pipeline()


def compile_pipeline(path: str | Path = PIPELINE_YAML, train_gpus: int = 0) -> Path:
    """Write the pipeline spec YAML; returns its path."""
    compiler.Compiler().compile(make_pipeline(train_gpus), package_path=str(path))
    return Path(path)
