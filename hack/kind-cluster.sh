#!/usr/bin/env bash
# A kind cluster for users with Docker (`make kind-cluster`); see docs/cluster.md.
# The node image follows the pinned Kubernetes version of the local harness.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^KUBERNETES_VERSION = "\(v[0-9.]*\)".*/\1/p' localcluster/psjob_localcluster/tools.py)
image=${KIND_NODE_IMAGE:-kindest/node:${version}}
name=${KIND_CLUSTER_NAME:-psjob}
for tool in docker kind; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool is not installed; without Docker use \`make dev-cluster\`" >&2
        exit 1
    }
done
if kind get clusters | grep -qx "$name"; then
    echo "kind cluster $name exists"
else
    kind create cluster --name "$name" --image "$image" --wait 120s
fi
echo "kubectl context: kind-$name (kubectl --context kind-$name get nodes)"
