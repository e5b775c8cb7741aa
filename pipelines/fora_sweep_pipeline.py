"""The sweep as a KFP v2 DAG: data prep -> Fisher calibration (once) -> Ray Tune trials -> lm-eval of the
best trial -> merge/register (tagged with the sweep and the trial). Compiled to
``pipelines/fora_sweep_pipeline.yaml`` by ``fora compile`` (checked in; a test fails if it is stale).

The search space is the config's ``sweep`` section; ``overrides`` changes it from the UI, e.g.
``sweep.layer_budgets=[0.25, 0.5, 1.0], sweep.lr=[1e-4, 3e-4]`` (use newlines between items holding commas).
"""

from pathlib import Path

from kfp import compiler, dsl, kubernetes

from components.evaluate.component import evaluate
from components.register.component import register
from components.sweep.component import sweep
from pipelines.fora_pipeline import DEFAULT_CONFIG, configure_task, prepare_and_calibrate

SWEEP_PIPELINE_YAML = Path(__file__).with_suffix(".yaml")


def make_sweep_pipeline(train_gpus: int = 0):
    """The sweep pipeline function; ``train_gpus`` > 0 requests GPUs for the sweep pod."""

    @dsl.pipeline(name="fora-sweep-pipeline",
                  description="FoRA sweep: Ray Tune over the layer budget K, learning rates and method")
    def fora_sweep_pipeline(config_yaml: str = DEFAULT_CONFIG, overrides: str = ""):
        prep, calib, common = prepare_and_calibrate(config_yaml, overrides,
                                                    "Fisher calibration (once for all trials)")

        trials = sweep(data=prep.outputs["data"], calibration=calib.outputs["calibration"], **common)
        configure_task(trials, "16", "64G").set_display_name("Ray Tune sweep").set_caching_options(False)
        trials.set_retry(num_retries=1, backoff_duration="60s")
        kubernetes.empty_dir_mount(trials, "shm", "/dev/shm", medium="Memory", size_limit="16Gi")
        if train_gpus:
            trials.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(train_gpus)

        best = {"config_yaml": trials.outputs["best_config_yaml"], "overrides": "",
                "mlflow_run_id": prep.outputs["Output"]}
        scored = evaluate(data=prep.outputs["data"], adapter=trials.outputs["best_adapter"], **best)
        configure_task(scored, "4", "16G").set_display_name("lm-eval: base vs best trial").set_caching_options(False)
        reg = register(data=prep.outputs["data"], calibration=calib.outputs["calibration"],
                       adapter=trials.outputs["best_adapter"], evaluation=scored.outputs["evaluation"],
                       registry_tags=trials.outputs["registry_tags"], **best)
        configure_task(reg, "2", "16G").set_display_name("merge and register the best trial").set_caching_options(False)

    return fora_sweep_pipeline


fora_sweep_pipeline = make_sweep_pipeline()


def compile_sweep_pipeline(path: str | Path = SWEEP_PIPELINE_YAML, train_gpus: int = 0) -> Path:
    compiler.Compiler().compile(make_sweep_pipeline(train_gpus), package_path=str(path))
    return Path(path)
