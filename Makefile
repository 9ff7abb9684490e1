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
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --compile-bytecode: the dependencies' .pyc are written once, here. Where PYTHONDONTWRITEBYTECODE
# is set (as on these machines and in many CI images) every process would otherwise compile
# torch's sources again on import: 7.2 s instead of 2.5 s per process here, paid by every test
# job and every replacement of a lost server or worker.
$(STAMP): $(LOCK) operator/pyproject.toml runtime/pyproject.toml localcluster/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(VENV)/bin/pip install -q "uv==$$(sed -n 's/^uv==//p' $(LOCK))"
	$(UV) pip sync -q --compile-bytecode --python $(PY) $(LOCK)
	$(UV) pip install -q --python $(PY) --no-deps -e operator -e runtime -e localcluster
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Build the pinned development environment (.venv) with the operator, the runtime and the tools

.PHONY: lock
lock: $(STAMP) ## Re-resolve requirements/dev.lock from the pyproject files
	$(UV) pip compile -q --python $(PY) operator/pyproject.toml runtime/pyproject.toml localcluster/pyproject.toml requirements/dev.in --extra examples -o $(LOCK)

.PHONY: lint
lint: $(STAMP) ## ruff (lint and format check), mypy and the import contracts of .importlinter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: check
check: lint ## The fast loop before make test: lint, then the unit and runtime tests (no cluster)
	$(PY) -m pytest -n 2 --dist loadgroup tests/unit tests/runtime

.PHONY: test
test: lint system-deps cluster-tools node-images ## The whole suite: lint, unit, runtime, real-control-plane and kubelet-node tests (2 pytest-xdist workers)
	$(PY) -m pytest -n 2 --dist loadgroup

.PHONY: crds
crds: $(STAMP) ## Regenerate crds/ and the chart's CRD from the pydantic models (psjob crd)
	$(VENV)/bin/psjob crd > crds/psjob.dev_psjobs.yaml
	cp crds/psjob.dev_psjobs.yaml charts/psjob-operator/crds/psjob.dev_psjobs.yaml

# --- Helm chart, images and GitOps (charts/, images/, examples/gitops/) ---
OPERATOR_IMAGE ?= ghcr.io/psjob/operator
RUNTIME_IMAGE ?= ghcr.io/psjob/runtime
# Runtime images to build: cpu, and CUDA wheel tags of PyTorch's index (e.g. "cpu cu128").
RUNTIME_VARIANTS ?= cpu
CONTAINER_ENGINE ?= $(shell command -v docker || command -v podman)
PSJOB_VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' operator/psjob_operator/__init__.py)
HELM = $(shell $(PY) -c 'from psjob_localcluster.tools import default_tools; print(default_tools().helm)')

.PHONY: operator-lock
operator-lock: $(STAMP) ## Re-pin requirements/operator.lock (operator image, hashed) at dev.lock's versions
	$(UV) pip compile -q --python-version 3.11 --universal --generate-hashes \
		--constraint $(LOCK) operator/pyproject.toml -o requirements/operator.lock

.PHONY: chart-lint
chart-lint: $(STAMP) ## helm lint --strict the chart, then the chart, image and GitOps tests (tests/chart)
	$(HELM) lint --strict charts/psjob-operator
	$(PY) -m pytest -q tests/chart

.PHONY: images
images: ## Build the operator and runtime images with docker or podman (RUNTIME_VARIANTS="cpu cu128")
	@test -n "$(CONTAINER_ENGINE)" || { echo "make images needs docker or podman on PATH" >&2; exit 1; }
	$(CONTAINER_ENGINE) build -f images/operator/Dockerfile -t $(OPERATOR_IMAGE):$(PSJOB_VERSION) .
	@for variant in $(RUNTIME_VARIANTS); do \
		suffix=$$([ $$variant = cpu ] || echo -cuda); \
		echo "$(CONTAINER_ENGINE) build runtime ($$variant) -> $(RUNTIME_IMAGE):$(PSJOB_VERSION)$$suffix"; \
		$(CONTAINER_ENGINE) build -f images/runtime/Dockerfile --build-arg TORCH_VARIANT=$$variant \
			-t $(RUNTIME_IMAGE):$(PSJOB_VERSION)$$suffix . || exit 1; \
	done

.PHONY: kind-e2e
kind-e2e: ## With Docker and kind (not in CI): build images, helm install, train examples/digits.yaml
	OPERATOR_IMAGE=$(OPERATOR_IMAGE) RUNTIME_IMAGE=$(RUNTIME_IMAGE) VERSION=$(PSJOB_VERSION) \
		hack/kind-e2e.sh

# --- the local Kubernetes cluster (localcluster/, docs/cluster.md) ---
SYSTEM_PACKAGES := libnss-wrapper openssl util-linux gcc libc6-dev

.PHONY: system-deps
system-deps: ## Install the Debian packages the local cluster needs (nss_wrapper, openssl, setpriv, cc) when missing
	@if ! dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing $(SYSTEM_PACKAGES)"; \
		$$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES); \
	fi

.PHONY: cluster-tools
cluster-tools: $(STAMP) ## Build the pinned kube-apiserver, etcd, controllers, kubectl, kubelet, kube-proxy, helm, the Kueue manager and kube-router once per machine (cached)
	$(PY) -m psjob_localcluster.build

# Debian packages of the kubelet node: the image builds (buildah, debootstrap) and the node itself.
NODE_PACKAGES := buildah debootstrap containerd runc containernetworking-plugins iptables ipset conntrack

.PHONY: node-deps
node-deps: ## Install the Debian packages the kubelet node and its image builds need (buildah, debootstrap, containerd, runc, CNI plugins, iptables, ipset, conntrack) when missing
	@if ! dpkg -s $(NODE_PACKAGES) >/dev/null 2>&1; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing $(NODE_PACKAGES)"; \
		$$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(NODE_PACKAGES); \
	fi

.PHONY: node-images
node-images: $(STAMP) system-deps node-deps ## Build the base, pause, CoreDNS, operator and runtime images for the kubelet node (cached by input hash)
	$(PY) -m psjob_localcluster.images

.PHONY: dev-cluster
dev-cluster: cluster-tools system-deps $(if $(filter kubelet,$(NODE)),node-images) ## Run a local cluster until Ctrl-C: pods as local processes, or NODE=kubelet for a real kubelet node with the project's images
	$(PY) -m psjob_localcluster dev $(if $(filter kubelet,$(NODE)),--kubelet)

.PHONY: kind-cluster
kind-cluster: ## With Docker and kind: a kind cluster at the pinned Kubernetes version
	hack/kind-cluster.sh

# --- the PS runtime (runtime/, docs/runtime.md) ---
DEMO_TRAINING := --mode sync --optimizer sgd --lr 0.05 --momentum 0.9

.PHONY: demo
demo: venv ## Train the digits example: 2 servers + 2 workers as local processes (sync), >= 95% accuracy
	$(PY) -m psjob_runtime.launch --servers 2 --workers 2 $(DEMO_TRAINING) \
		--config '{"minAccuracy": 0.95}' -- $(PY) -m psjob_runtime.examples.digits

.PHONY: ctr
ctr: venv ## Train the ctr example: a 10M x 16 table on 2 servers + 2 workers (sync), AUC within 0.02 of the hidden model's
	$(PY) -m psjob_runtime.launch --servers 2 --workers 2 --mode sync --optimizer adagrad --lr 0.05 \
		--config '{"maxAucGap": 0.02}' -- $(PY) -m psjob_runtime.examples.ctr

# --- benchmarks (bench/README.md) ---
BENCH_ARGS = $(if $(QUICK),--quick)

.PHONY: bench-runtime
bench-runtime: venv ## Runtime benchmarks vs gloo, DDP and one process (QUICK=1: about 4 minutes on 2 cores), JSON in bench/out/
	$(PY) -m bench.runtime $(BENCH_ARGS)

.PHONY: bench-operator
bench-operator: venv cluster-tools system-deps ## Operator benchmarks on a no-run local cluster (QUICK=1: one repeat), JSON in bench/out/
	$(PY) -m bench.operator $(BENCH_ARGS)

.PHONY: bench-recovery
bench-recovery: venv ## In-place recovery vs whole-job restart under a kill schedule (about 20 minutes on 2 quiet cores, more under load; QUICK=1: about 10), JSON in bench/out/, its section of bench/README.md
	$(PY) -m bench.runtime.recovery $(BENCH_ARGS)
	$(PY) -m bench.runtime.recovery_report

.PHONY: bench-recovery-cluster
bench-recovery-cluster: venv cluster-tools system-deps ## The same three jobs as PSJobs through the operator on the dev cluster's control plane, pods deleted on the schedule (about 12 minutes on 2 cores; QUICK=1: about 7), its section of bench/README.md
	$(PY) -m bench.operator.recovery $(BENCH_ARGS)
	$(PY) -m bench.operator.recovery_report

.PHONY: bench
bench: bench-runtime bench-operator ## The runtime and operator benchmarks (QUICK=1: about 7 minutes on 2 cores; full: about 15), then the plots and tables of bench/README.md; the recovery benchmarks run on their own
	$(PY) -m bench.report
