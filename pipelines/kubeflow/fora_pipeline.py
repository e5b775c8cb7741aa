"""The FoRA pipeline as a KFP v2 DAG: data prep -> Fisher calibration -> Ray Train FoRA -> lm-eval ->
merge/register. Compiled to ``pipelines/kubeflow/fora_pipeline.yaml`` by ``fora compile --output-dir
pipelines/kubeflow`` (checked in; a test fails if it is stale). Upload that file in the Kubeflow UI, or ``fora submit
--host URL CONFIG``.

Parameters (the *Create run* form shows each with its help):

* typed fields for what users change most (``model``, ``data_source``, ``data_format``, ``method``,
  ``layer_budget``, ``rank``, ``max_steps``, ``lr``, ``stiefel_lr``, ``eval_tasks``, ``heldout_metrics``,
  ``register_metric``, ``approval``, ``registered_model_name``: ``pipelines/config/form.py``), their defaults
  the compiling config's values;
* ``config_yaml`` (a whole run config; the default is ``configs/cluster.yaml``) for everything else;
* ``overrides`` (``section.field=value`` items: one per line, or separated by commas before each new ``key=``,
  or a JSON list as ``fora submit`` sends them);
* ``scheduled`` (true for a recurring run: ``fora submit --schedule`` sets it; in the UI, tick it when creating a
  recurring run), which lets an unchanged run skip training.

Precedence: ``config_yaml`` < the typed fields changed from their defaults < ``overrides``. The first step
(``resolve``) applies them, validates the result (one line naming the parameter and field on a bad value) and
hands the effective config (its ``run_config`` output) to every later step.

Each step's pod gets the resources of the compiling config's ``resources`` section
(``pipelines/config/resources.py``), runs as UID 1000 (non-root), and reads its credentials from Secrets:
``fora-s3-credentials`` (every step), ``fora-mlflow-credentials`` (the steps that talk to MLflow: not data prep
or calibration) and ``fora-ray-token`` (train and sweep, optional: only with a Ray cluster; KubeRay's key
``auth_token``); service addresses come from the ``fora-services`` ConfigMap (``k8s/base``).

Step 0, ``resolve`` (never cached), opens the pipeline run's MLflow run and fingerprints the data source
(``pipelines/data/fingerprint.py``). Data prep and calibration are cached on the config *and* that
fingerprint, so a cache hit means the same data; they log nothing to MLflow themselves (a cached output
must not name an earlier run's MLflow run): the train step logs the data card and the Fisher report. When
the champion was trained on the same fingerprint and recipe and ``register.skip_unchanged`` allows it
(default: scheduled runs), everything after ``resolve`` is skipped (``dsl.If``) and the decision is in its
``decision`` output and the MLflow run's tags. Train, evaluate and register are never cached (register has
side effects; train resumes from its own checkpoints, and a KFP retry of its pod picks them up: the
pipeline run's id names its checkpoint namespace).
"""

import json
from pathlib import Path

import yaml
from kfp import compiler, dsl, kubernetes

from components import CUDA_IMAGE
from components.calibrate.component import calibrate
from components.data_prep.component import data_prep
from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.register.component import register
from components.resolve.component import resolve
from components.train.component import train

from ..config.form import RUN_FORM, FormField, form_defaults
from ..config.overrides import ConfigLoader
from ..config.resources import StepResources, apply_to_task
from ..config.run_config import RunConfig, load_run_config
from .images import Images, retag
from .typed_form import form_values, typed_pipeline

ROOT = Path(__file__).resolve().parents[2]
PIPELINE_YAML = Path(__file__).with_suffix(".yaml")
DEFAULT_CONFIG_PATH = ROOT / "configs" / "cluster.yaml"
# one line (JSON is YAML): KFP copies defaults into the spec's header comment, and a multi-line default
# would break that comment and with it the YAML file
DEFAULT_CONFIG = json.dumps(yaml.load(DEFAULT_CONFIG_PATH.read_text(), Loader=ConfigLoader))

# Secrets and the ConfigMap the pipeline namespace holds (k8s/examples/, k8s/base/)
S3_SECRET = "fora-s3-credentials"
MLFLOW_SECRET = "fora-mlflow-credentials"
RAY_TOKEN_SECRET = "fora-ray-token"
RAY_TOKEN_KEY = "auth_token"  # KubeRay's key (authOptions.secretName), so one Secret serves both
HF_TOKEN_SECRET = "fora-hf-token"  # optional: a gated model on the Hugging Face Hub (key HF_TOKEN)
SERVICES_CONFIG_MAP = "fora-services"
POD_UID = 1000  # the image's non-root user
# the labels k8s/base/networkpolicy.yaml selects the step pods by (default deny, then the egress they need)
POD_LABELS = {"app.kubernetes.io/part-of": "fora-pipelines", "app.kubernetes.io/component": "pipeline-step"}
# shown with the pipeline in the Kubeflow UI (README "First apply": the version matrix)
REQUIREMENTS = ("Needs Kubeflow Pipelines >= 2.15 (older drivers make the optional Secrets fora-hf-token and "
                "fora-ray-token required: create them once, empty) and k8s/ applied in the run's namespace; run "
                "it with the ServiceAccount fora-pipeline.")


def configure_task(task: dsl.PipelineTask, res: StepResources, *, mlflow: bool, ray: bool = False
                   ) -> dsl.PipelineTask:
    """Resources from the config (a step given GPUs runs the CUDA image, ``FORA_CUDA_IMAGE``); non-root;
    labelled for the NetworkPolicies; service URLs from a ConfigMap and only the credentials the step uses, from
    Secrets (by name only: no credential is ever written into the compiled spec): S3 for every step (data,
    models and checkpoints may be s3://), the optional Hugging Face token (every step may load a gated model's
    tokenizer or weights), MLflow's login only where the step talks to MLflow (``mlflow``), the Ray token only
    where it submits Ray jobs (``ray``: train, sweep)."""
    apply_to_task(task, res)
    if res.gpus:
        task.container_spec.image = CUDA_IMAGE
    kubernetes.set_security_context(task, run_as_user=POD_UID, run_as_group=POD_UID, run_as_non_root=True)
    for key, value in POD_LABELS.items():
        kubernetes.add_pod_label(task, key, value)
    kubernetes.use_secret_as_env(task, S3_SECRET, {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                                                   "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"})
    kubernetes.use_secret_as_env(task, HF_TOKEN_SECRET, {"HF_TOKEN": "HF_TOKEN"}, optional=True)
    if mlflow:
        kubernetes.use_secret_as_env(task, MLFLOW_SECRET, {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                                                           "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"})
    if ray:
        kubernetes.use_secret_as_env(task, RAY_TOKEN_SECRET, {RAY_TOKEN_KEY: "RAY_AUTH_TOKEN"}, optional=True)
    kubernetes.use_config_map_as_env(task, SERVICES_CONFIG_MAP, {
        "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
        **({"RAY_ADDRESS": "RAY_ADDRESS"} if ray else {})}, optional=True)
    return task


def default_run() -> RunConfig:
    return load_run_config(DEFAULT_CONFIG_PATH)


def resolve_run(run: RunConfig, config_yaml: str, overrides: str, scheduled, form: dict,
                fields: tuple[FormField, ...], form_name: str) -> dsl.PipelineTask:
    """Step 0, never cached: the effective config (``config_yaml`` < changed typed fields < ``overrides``), the
    MLflow run, the data fingerprint, and whether to train at all."""
    res = resolve(config_yaml=config_yaml, overrides=overrides, form_defaults=form_defaults(run, fields),
                  form_name=form_name, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, scheduled=scheduled, **form)
    configure_task(res, run.resources.data_prep, mlflow=True).set_display_name("fingerprint data, open MLflow run")
    res.set_caching_options(False)
    return res


def prepare_and_calibrate(run: RunConfig, res: dsl.PipelineTask, calibrate_name: str):
    """The head both DAGs share after ``resolve_run``: data prep and the Fisher pass on the effective config,
    both cached on the data source's fingerprint (a cache hit means the same data). Returns (prep task,
    calibrate task, the arguments every later step takes)."""
    fingerprint = res.outputs["data_fingerprint"]
    config = {"config_yaml": res.outputs["run_config"], "overrides": ""}
    prep = data_prep(data_fingerprint=fingerprint, **config)
    configure_task(prep, run.resources.data_prep, mlflow=False).set_display_name("data prep")
    calib = calibrate(data=prep.outputs["data"], data_fingerprint=fingerprint, **config)
    configure_task(calib, run.resources.calibrate, mlflow=False).set_display_name(calibrate_name)
    return prep, calib, {**config, "mlflow_run_id": res.outputs["mlflow_run_id"]}


FIXED_PARAMETERS = [
    ("config_yaml", str, DEFAULT_CONFIG, "The whole run config as YAML or JSON (default: configs/cluster.yaml); "
     "the typed fields changed from their defaults, then overrides, win over it."),
    ("overrides", str, "", "section.field=value items for any other config field, one per line (e.g. "
     "train.batch_size=16); they win over everything else."),
]


def make_pipeline(run: RunConfig | None = None):
    """The pipeline function, its typed defaults and pods from ``run`` (default: ``configs/cluster.yaml``)."""
    run = run or default_run()

    def body(p: dict) -> None:
        res = resolve_run(run, p["config_yaml"], p["overrides"], p["scheduled"], form_values(p, RUN_FORM),
                          RUN_FORM, "run")
        with dsl.If(res.outputs["Output"] == True, name="data-or-settings-changed"):  # noqa: E712 (a KFP condition)
            _train_and_register(run, res)

    scheduled = ("scheduled", bool, False, "True for a recurring run: an unchanged run (same data fingerprint and "
                 "recipe as the champion) skips training.")
    return typed_pipeline("fora-pipeline", "FoRA fine-tuning: Fisher layer selection + Stiefel LoRA. "
                          f"{REQUIREMENTS}",
                          [*FIXED_PARAMETERS, scheduled], RUN_FORM, form_defaults(run, RUN_FORM), body)


def _train_and_register(run: RunConfig, res: dsl.PipelineTask) -> None:
    """Data prep, calibration, train, evaluate, register: what runs when the resolve step says train."""
    prep, calib, common = prepare_and_calibrate(run, res, "Fisher calibration")

    fit = train(data=prep.outputs["data"], calibration=calib.outputs["calibration"],
                pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER, **common)
    configure_task(fit, run.resources.train, mlflow=True, ray=True).set_display_name("FoRA fine-tune (Ray Train)")
    fit.set_caching_options(False)

    scored = evaluate(data=prep.outputs["data"], adapter=fit.outputs["adapter"], **common)
    configure_task(scored, run.resources.evaluate, mlflow=True).set_display_name("lm-eval: base vs tuned")
    scored.set_caching_options(False)

    reg = register(data=prep.outputs["data"], calibration=calib.outputs["calibration"],
                   adapter=fit.outputs["adapter"], evaluation=scored.outputs["evaluation"], **common)
    configure_task(reg, run.resources.register, mlflow=True).set_display_name("merge and register").set_caching_options(False)
    deploy_after(run, reg, common)


def deploy_after(run: RunConfig, reg: dsl.PipelineTask, common: dict) -> dsl.PipelineTask:
    """The serving handoff after register: the version's InferenceService as an artifact, applied when
    ``serve.deploy`` is true and the version is the champion (``pipelines/serving/deploy.py``)."""
    dep = deploy(config_yaml=common["config_yaml"], overrides=common["overrides"], version=reg.outputs["Output"])
    configure_task(dep, run.resources.data_prep, mlflow=True).set_display_name("serving: InferenceService")  # light: no GPU
    return dep.set_caching_options(False)


fora_pipeline = make_pipeline()


def compile_pipeline(path: str | Path = PIPELINE_YAML, run: RunConfig | None = None,
                     images: Images | None = None) -> Path:
    """Write the pipeline spec YAML with ``run``'s resources (and ``images``: ``images.py``); returns its path."""
    compiler.Compiler().compile(make_pipeline(run), package_path=str(path))
    return retag(Path(path), images) if images else Path(path)
