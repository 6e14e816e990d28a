#!/usr/bin/env bash
# Runs the operator from source against the cluster of the current KUBECONFIG, as its own
# ServiceAccount (reserve-system/reserve-operator) with exactly the shipped RBAC: the status
# policy shipped with the CRDs lets no one else write status. Arguments go to `reserve-operator run`.
#
#   hack/run.sh                       # every namespace, no leader election, probes on 127.0.0.1:8080
#   INSTALL=1 hack/run.sh             # apply manifests/crds and the operator's RBAC first
#   hack/run.sh --namespace coffee --probe-addr 127.0.0.1:9090
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if [[ ${INSTALL:-0} == 1 ]]; then
  kubectl apply --server-side -k manifests/crds
  kubectl apply --server-side -f manifests/operator/namespace.yaml \
    -f manifests/operator/serviceaccount.yaml \
    -f manifests/operator/rbac.yaml
fi

kubeconfig=$(mktemp)
trap 'rm -f "$kubeconfig"' EXIT
kubectl config view --minify --flatten >"$kubeconfig"
token=$(kubectl create token reserve-operator -n reserve-system --duration 12h)
kubectl --kubeconfig "$kubeconfig" config set-credentials reserve-operator --token "$token" >/dev/null
kubectl --kubeconfig "$kubeconfig" config set-context --current --user reserve-operator >/dev/null

# Defaults through the environment, so flags in the arguments win over them.
export RESERVE_PROBE_ADDR=${RESERVE_PROBE_ADDR:-127.0.0.1:8080}
KUBECONFIG=$kubeconfig cargo run --bin reserve-operator -- run --no-leader-election "$@"
