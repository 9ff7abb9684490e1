# psjob — the one entry point. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
LOCK := requirements/dev.lock
STAMP := $(VENV)/.synced

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): $(LOCK) operator/pyproject.toml runtime/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(VENV)/bin/pip install -q "uv==$$(sed -n 's/^uv==//p' $(LOCK))"
	$(UV) pip sync -q --python $(PY) $(LOCK)
	$(UV) pip install -q --python $(PY) --no-deps -e operator -e runtime
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Build the pinned development environment (.venv) with the operator, the runtime and the tools

.PHONY: lock
lock: $(STAMP) ## Re-resolve requirements/dev.lock from the pyproject files
	$(UV) pip compile -q --python $(PY) operator/pyproject.toml runtime/pyproject.toml requirements/dev.in --extra examples -o $(LOCK)

.PHONY: lint
lint: $(STAMP) ## ruff (lint and format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: test
test: lint ## The whole suite: lint, mypy, unit, runtime and real-control-plane tests
	$(PY) -m pytest

.PHONY: crds
crds: $(STAMP) ## Regenerate crds/ from the pydantic models (psjob crd)
	$(VENV)/bin/psjob crd > crds/psjob.dev_psjobs.yaml
