"""fora-pipelines: the FoRA fine-tuning job as plain typed steps, a CLI and KFP v2 DAGs.

The rooms, from the bottom up; a room imports only the rooms below it (``tests/test_layering.py``):

    config/      the one run config schema, its checks and overrides, step resources, the user errors
    runtime/     storage (local and S3), atomic writes, checkpoints, Ray and Ray jobs, MLflow tracking, models
    data/        training sources and formats, the built-in commonsense mix, source fingerprints
    evaluation/  lm-eval suites, general text and drift, adapter reports, paired statistics
    registry/    the MLflow registry: champion, paired test, promotion, history, the pyfunc loader
    steps/       the five steps, the preflight checks and the chain that runs them (``stages.py``)
    sweep/       the Ray Tune sweep: trials, the Tune runner, the driver, the report
    ablation/    the ablation: runner and report
    kubeflow/    the KFP DAGs and their compiled YAML, the local KFP runner, submission to a KFP host
    cli.py       the ``fora`` command

``components/`` (one thin KFP component per step) sits between ``ablation/`` and ``kubeflow/``.
"""
