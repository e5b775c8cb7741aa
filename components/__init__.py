"""Thin KFP v2 components, one folder per pipeline step; each calls one function of ``pipelines.steps.stages``.

Every component runs in the project image (``Dockerfile``), which has fora-pipelines, kfp, Ray, MLflow
and lm-eval installed, so the components install nothing at run time (``install_kfp_package=False``).
Set ``FORA_IMAGE`` when compiling to point at your registry's copy; the steps the compiling config gives GPUs
(``resources.<step>.gpus``) run ``FORA_CUDA_IMAGE`` instead (the CUDA build: ``make image IMAGE_VARIANT=cuda``).
"""

import os

BASE_IMAGE = os.environ.get("FORA_IMAGE", "ghcr.io/fora-pipelines/fora:0.1.0")
CUDA_IMAGE = os.environ.get("FORA_CUDA_IMAGE", "ghcr.io/fora-pipelines/fora-cuda:0.1.0")
