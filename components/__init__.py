"""Thin KFP v2 components, one folder per pipeline step; each calls one function of ``pipelines.steps.stages``.

Every component runs in the project image (``Dockerfile``), which has fora-pipelines, kfp, Ray, MLflow
and lm-eval installed, so the components install nothing at run time (``install_kfp_package=False``).
Set ``FORA_IMAGE`` when compiling to point at your registry's copy.
"""

import os

BASE_IMAGE = os.environ.get("FORA_IMAGE", "ghcr.io/fora-pipelines/fora:0.1.0")
