# cvloop — two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create what they need first (idempotent: a venv is rebuilt only when its lock changes).

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
LS_VENV := .venv-labelstudio
PIP_QUIET := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }

MAIN_HASH := $(shell cat requirements/main.lock | sha256sum | cut -c1-16)
LS_HASH := $(shell cat requirements/labelstudio.lock | sha256sum | cut -c1-16)
PROJ_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
MAIN_STAMP := $(VENV)/.cvloop-lock-$(MAIN_HASH)
LS_STAMP := $(LS_VENV)/.cvloop-lock-$(LS_HASH)
PROJ_STAMP := $(VENV)/.cvloop-project-$(MAIN_HASH)-$(PROJ_HASH)
CVLOOP := $(VENV)/bin/cvloop
PYTEST_ARGS ?=

.PHONY: help setup demo test test-fast test-gpu lint format up down status clean-state

help:
	@echo "make demo    set up, start the local stack, run the demo, print the URLs"
	@echo "make test    set up, run the test suite (all but GPU tests)"
	@echo "make setup   create .venv and .venv-labelstudio from the lock files (idempotent)"
	@echo "make up | down | status    the local services (cvloop services ...)"
	@echo "make lint | format         ruff; lint also checks the layer contracts (import-linter)"
	@echo "make test-gpu              the GPU (TensorRT) tests; skipped with a reason without CUDA"

setup: $(MAIN_STAMP) $(PROJ_STAMP) $(LS_STAMP)

$(MAIN_STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "cvloop needs $(PYTHON) (CPython 3.11); set PYTHON=..."; exit 1; }
	@echo "==> $(VENV): installing requirements/main.lock (first time ~4-5 min, ~7.6 GB)"
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --no-deps -q -r requirements/main.lock $(PIP_QUIET)
	$(VENV)/bin/pip check
	touch $@

$(PROJ_STAMP): $(MAIN_STAMP)
	$(VENV)/bin/pip install --no-deps --no-build-isolation -q -e . $(PIP_QUIET)
	rm -f $(VENV)/.cvloop-project-*
	touch $@

$(LS_STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "cvloop needs $(PYTHON) (CPython 3.11)"; exit 1; }
	@echo "==> $(LS_VENV): installing Label Studio from requirements/labelstudio.lock (~2 min, ~1 GB)"
	rm -rf $(LS_VENV)
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --no-deps -q -r requirements/labelstudio.lock $(PIP_QUIET)
	$(LS_VENV)/bin/pip check
	touch $@

demo: setup
	$(CVLOOP) demo

# two pytest-xdist workers: the session stack's tests in one, the e2e demo (its own stack) in
# the other; on 2 cores each is about half idle alone (waiting on services, flow runs)
TEST_WORKERS ?= 2

test: setup
	$(VENV)/bin/python -m pytest -m "not gpu" -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/python -m pytest -m "unit" $(PYTEST_ARGS)

test-gpu: setup
	@if command -v nvidia-smi >/dev/null; then \
	  $(VENV)/bin/pip install -q -r requirements/gpu.lock $(PIP_QUIET); \
	else echo "no nvidia-smi: the GPU tests will skip with their reason"; fi
	$(VENV)/bin/python -m pytest -m "gpu" -rs $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache  # the layers of pyproject.toml: upward imports, circles

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

up: setup
	$(CVLOOP) services up

down:
	@if [ -x $(CVLOOP) ]; then $(CVLOOP) services down; else echo "nothing to stop (no $(VENV))"; fi

status: setup
	$(CVLOOP) services status

clean-state: down
	rm -rf .cvloop
