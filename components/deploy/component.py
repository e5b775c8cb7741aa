"""KFP component after register: the InferenceService of the registered version as an output artifact, applied
to the cluster when ``serve.deploy`` is true and the version is the champion (``pipelines/serving/deploy.py``)."""

from kfp import dsl
from kfp.dsl import Artifact, Markdown, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy(config_yaml: str, overrides: str, version: int, inference_service: Output[Artifact],
           deployment: Output[Markdown]) -> str:
    """Serves a registered version: its KServe InferenceService (``serve`` section), applied through the API
    server when ``serve.deploy`` is true and the version is the champion.

    Args:
        config_yaml: the effective run config as YAML (the resolve step's ``run_config``).
        overrides: section.field=value items applied over it ("" in the pipeline: resolve applied them).
        version: the registered version to serve.

    Returns:
        inference_service: the InferenceService YAML, ready for ``kubectl apply -f``.
        deployment: what happened, as Markdown.
        Output: what happened, one line.
    """
    import yaml

    from pipelines.config.overrides import split_overrides
    from pipelines.config.run_config import parse_run_config
    from pipelines.runtime.interruption import one_line_command
    from pipelines.serving.deploy import deploy as deploy_version

    with one_line_command():
        run = parse_run_config(config_yaml, split_overrides(overrides))
        manifest, said = deploy_version(run, version)
    with open(inference_service.path, "w") as f:
        f.write(yaml.safe_dump(manifest, sort_keys=False) if manifest else f"# {said}\n")
    inference_service.metadata.update({"version": version, "deployed": said.startswith("InferenceService")})
    with open(deployment.path, "w") as f:
        f.write(f"Serving, version {version}: {said}.\n")
    print(f"[fora] serving: {said}")
    return said
