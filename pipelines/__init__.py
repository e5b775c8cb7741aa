"""fora-pipelines: the FoRA fine-tuning job as plain typed steps, a CLI and KFP v2 DAGs.

The packages, from the bottom up; a package imports only the packages below it (``tests/test_layering.py``):

    config/         the one run config schema, its checks and overrides, step resources, the user errors
    runtime/        storage (local and S3), atomic writes, checkpoints, Ray and Ray jobs, MLflow tracking, models
    data/           training sources and formats, the built-in commonsense mix, source fingerprints
    evaluation/     lm-eval suites, general text and drift, adapter reports, the bootstrap and intervals
    registry/       the MLflow registry: champion, significance, promotion, history, the pyfunc loader
    serving/        a registered version behind an endpoint (KServe InferenceService)
    preflight/      a run config checked against its model, data source and memory before any work
    training/       the training loop (set up, resume, fit, validate) and the one TorchTrainer builder
    steps/          the five steps and the chain that runs them (``stages.py``)
    sweep/          the Ray Tune sweep: trials, the Tune runner, the driver, the report
    ablation/       the ablation: runner and report
    kubeflow/       the KFP DAGs and their compiled YAML, the local KFP runner, submission to a KFP host
    cluster_model/  the deployment model: every pod we cause, what it must reach and may do
    cli.py          the ``fora`` command

``components/`` (one thin KFP component per step) sits between ``ablation/`` and ``kubeflow/``.
"""
