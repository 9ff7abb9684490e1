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

# --- the local Kubernetes control plane (tests/cluster, docs/cluster.md) ---
SYSTEM_PACKAGES := libnss-wrapper openssl util-linux

.PHONY: system-deps
system-deps: ## Install the Debian packages the local cluster needs (nss_wrapper, openssl, setpriv) when missing
	@if ! dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing $(SYSTEM_PACKAGES)"; \
		$$sudo apt-get update -q && $$sudo apt-get install -y -q $(SYSTEM_PACKAGES); \
	fi

.PHONY: cluster-tools
cluster-tools: $(STAMP) ## Build the pinned kube-apiserver, etcd, controllers, kubectl and helm once per machine (cached)
	$(PY) tests/cluster/build_tools.py

.PHONY: dev-cluster
dev-cluster: cluster-tools system-deps ## Run a local Kubernetes cluster (pods as local processes) until Ctrl-C
	PYTHONPATH=tests/cluster $(PY) -m localcluster dev

.PHONY: kind-cluster
kind-cluster: ## With Docker and kind: a kind cluster at the pinned Kubernetes version
	tests/cluster/kind-cluster.sh
