#!/usr/bin/env bash
# The path a user with Docker takes, end to end (`make kind-e2e`):
#   a kind cluster -> the operator and runtime images built and loaded into it -> the Helm chart
#   installed -> examples/digits.yaml applied -> wait until the PSJob has Succeeded.
# Needs docker, kind, kubectl and helm on PATH. It cannot run in the project's CI, which has no
# Docker engine; the chart's RBAC is proven there on a real control plane instead
# (tests/e2e/test_helm_install.py).
#
# Environment: KIND_CLUSTER (default psjob-e2e), JOB_MANIFEST (default examples/digits.yaml),
# KEEP_CLUSTER=1 to keep the cluster afterwards, TIMEOUT (default 20m).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-psjob-e2e}
JOB_MANIFEST=${JOB_MANIFEST:-examples/digits.yaml}
TIMEOUT=${TIMEOUT:-20m}
OPERATOR_IMAGE=${OPERATOR_IMAGE:-ghcr.io/psjob/operator}
RUNTIME_IMAGE=${RUNTIME_IMAGE:-ghcr.io/psjob/runtime}
VERSION=${VERSION:?set VERSION to the operator version (make kind-e2e does)}
NAMESPACE=psjob-system

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is not on PATH; install it first" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "kind-e2e: the Docker engine is not running" >&2; exit 1; }

step() { printf '\n==> %s\n' "$*"; }

show_state() {
  step "state on failure"
  kubectl get psjobs,pods,services -A -o wide || true
  kubectl -n "$NAMESPACE" logs deployment/psjob-operator --tail=100 || true
}

cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then show_state; fi
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER"; fi
  exit "$status"
}

step "kind cluster $CLUSTER at the pinned Kubernetes version"
KIND_CLUSTER_NAME="$CLUSTER" hack/kind-cluster.sh
trap cleanup EXIT
kubectl config use-context "kind-$CLUSTER"

step "building images"
make images OPERATOR_IMAGE="$OPERATOR_IMAGE" RUNTIME_IMAGE="$RUNTIME_IMAGE" RUNTIME_VARIANTS=cpu

step "loading images into the cluster"
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE:$VERSION" "$RUNTIME_IMAGE:$VERSION"

step "installing the chart"
helm upgrade --install psjob charts/psjob-operator --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="$OPERATOR_IMAGE" --set image.tag="$VERSION" --wait --timeout 5m

step "training $JOB_MANIFEST"
job=$(kubectl apply -f "$JOB_MANIFEST" -o name)
kubectl wait --for=condition=Succeeded "$job" --timeout="$TIMEOUT"
kubectl get "$job"
step "kind-e2e passed: $job succeeded"
