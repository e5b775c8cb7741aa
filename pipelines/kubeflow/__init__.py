"""The Kubeflow Pipelines side: the KFP v2 DAGs built from ``components/``, their compiled, checked-in YAML
(``fora_pipeline.yaml``, ``fora_sweep_pipeline.yaml``: a test fails when they are stale), the local KFP
runner behind ``fora run --kfp``, and ``fora submit`` to a KFP host.

Imports ``components`` and the packages below; only the CLI imports it.
"""
