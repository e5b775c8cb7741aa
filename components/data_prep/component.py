"""KFP component for step 1: training source -> tokenized splits + data card (cached on the source's
fingerprint: a new source version misses the cache)."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def data_prep(config_yaml: str, overrides: str, data_fingerprint: str, data: Output[Dataset],
              data_card: Output[Markdown]) -> str:
    """Reads ``data.source`` and writes the train, validation and calibration splits and the data card. Logs
    nothing to MLflow (a cached step must not name a run: the train step logs the data card into this pipeline
    run's MLflow run).

    Args:
        config_yaml: the effective run config as YAML (the resolve step's ``run_config``).
        overrides: section.field=value items applied over it ("" in the pipeline: resolve applied them).
        data_fingerprint: the data source's fingerprint from resolve: the cache key (a hit means the same data).

    Returns:
        data: the prepared splits (``train.jsonl``, ``validation.jsonl``, ``calibration.jsonl``) and the card.
        data_card: the data card as Markdown (source, counts, lengths, template, fingerprint).
        Output: the prepared data's content hash.
    """
    import shutil
    from pathlib import Path

    from pipelines.config.overrides import split_overrides
    from pipelines.config.run_config import parse_run_config
    from pipelines.runtime.interruption import one_line_command
    from pipelines.steps import stages

    with one_line_command():
        run = parse_run_config(config_yaml, split_overrides(overrides))
        card = stages.data_prep(run, data.path, None, source_fingerprint=data_fingerprint)
    shutil.copy(Path(data.path) / "data_card.md", data_card.path)
    data.metadata.update({**card["counts"], "content_hash": card["content_hash"], "source": run.data.source,
                          "source_fingerprint": data_fingerprint})
    return card["content_hash"]
