#!/usr/bin/env bash
# The quick start: a local control plane, the operator, and the samples in examples/ moving
# through their states while `kubectl get customers` shows the levels change. Leaves nothing
# running. Set KEEP=1 to leave the control plane up for exploring (stop it with
# `make demo-down`; the next `make demo` starts from a new one anyway).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export RESERVE_CLUSTER_DIR=${RESERVE_CLUSTER_DIR:-$repo/target/demo/cluster}
ns=coffee
log=$repo/target/demo/operator.log

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { echo "demo: $*"; }

operator_pid=
cluster=
cleanup() {
  status=$?
  if [[ -n $operator_pid ]]; then
    kill -TERM "$operator_pid" 2>/dev/null && wait "$operator_pid" 2>/dev/null || true
  fi
  if [[ -z $cluster ]]; then
    :
  elif [[ ${KEEP:-0} == 1 && $status == 0 ]]; then
    say "control plane left running: $("$cluster" env)"
    say "stop it with: make demo-down"
  else
    "$cluster" down >/dev/null 2>&1 || true
  fi
  if [[ $status != 0 ]]; then
    if [[ -s $log ]]; then say "failed (exit $status); operator log: $log"; else say "failed (exit $status)"; fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "Building the control-plane tools and the operator (first run: several minutes)"
# The tools first: without a suitable Go they cannot be built, and that is said at once.
bin=$("$repo/hack/control-plane-tools.sh")
export PATH="$bin:$PATH"
operator=${RESERVE_OPERATOR_BIN:-}
cluster_bin=${RESERVE_CLUSTER_BIN:-}
if [[ -z $operator || -z $cluster_bin ]]; then
  cargo build --quiet -p reserve-operator -p reserve-testkit --bins
  operator=$repo/target/debug/reserve-operator
  cluster_bin=$repo/target/debug/reserve-cluster
fi

step "Starting a local control plane (etcd + kube-apiserver)"
# A control plane an earlier `KEEP=1 make demo` left is stopped: the demo starts from nothing.
"$cluster_bin" down >/dev/null 2>&1 || true
cluster=$cluster_bin
export KUBECONFIG=$("$cluster" up)
kubectl create namespace "$ns" >/dev/null

step "Starting the operator (log: target/demo/operator.log)"
mkdir -p "$(dirname "$log")"
# As its own ServiceAccount (reserve-system/reserve-operator), with exactly the shipped RBAC.
KUBECONFIG=$RESERVE_CLUSTER_DIR/operator.kubeconfig \
  "$operator" run --no-leader-election --namespace "$ns" --probe-addr 127.0.0.1:0 >"$log" 2>&1 &
operator_pid=$!

show() { kubectl get customers -n "$ns"; }
# Waits until the operator has published what the step should lead to.
until_level() { # customer level score
  kubectl wait -n "$ns" "customer/$1" --for=jsonpath='{.status.score}'="$3" --timeout=60s >/dev/null
  kubectl wait -n "$ns" "customer/$1" --for=jsonpath='{.status.level}'="$2" --timeout=60s >/dev/null
}
state() { kubectl patch order "$1" -n "$ns" --type merge -p "{\"spec\":{\"state\":\"$2\"}}" >/dev/null; echo "  order $1 -> $2"; }

step "Applying examples/: customers alice, bob, dana; six orders, one for carol who is not a customer yet"
kubectl apply -n "$ns" -f examples/customers.yaml -f examples/orders.yaml
kubectl wait -n "$ns" customers --all --for=condition=Ready --timeout=60s >/dev/null
kubectl wait -n "$ns" order/carol-latte --for=condition=CustomerFound=false --timeout=60s >/dev/null
show
kubectl get orders -n "$ns"

step "Alice's orders are served: 2 + 3 + 4 = 9 points, Silver"
state alice-americano Completed
state alice-latte Completed
state alice-mocha Completed
until_level alice Silver 9
show

step "Alice buys a bag of beans (3 more): 12 points, Gold"
kubectl create -n "$ns" -f - >/dev/null <<ORDER
apiVersion: reserve.coffeechain.io/v1
kind: Order
metadata: {name: alice-beans}
spec: {customer: alice, product: House Blend Beans, quantity: 3, state: Completed}
ORDER
echo "  order alice-beans created Completed"
until_level alice Gold 12
show

step "Bob: an espresso and a cold brew are served (6 points, Silver), then the cold brew is refunded"
state bob-espresso Completed
state bob-cold-brew Completed
until_level bob Silver 6
state bob-cold-brew Canceled
until_level bob Bronze 1
show

step "Carol signs up: her waiting order is attributed (snapshot Bronze) and served"
kubectl create -n "$ns" -f - >/dev/null <<CUSTOMER
apiVersion: reserve.coffeechain.io/v1
kind: Customer
metadata: {name: carol}
spec: {displayName: Carol Park}
CUSTOMER
state carol-latte Completed
until_level carol Bronze 2
kubectl wait -n "$ns" order/carol-latte --for=condition=CustomerFound --timeout=60s >/dev/null

step "A forbidden change is refused by the API server, nothing is stored"
kubectl patch order bob-cold-brew -n "$ns" --type merge -p '{"spec":{"state":"Completed"}}' 2>&1 | sed 's/^/  /' || true

step "Final state"
kubectl get customers,orders -n "$ns"
echo
kubectl get events -n "$ns" --field-selector reason=LevelChanged --sort-by=.metadata.creationTimestamp \
  -o custom-columns=CUSTOMER:.involvedObject.name,EVENT:.message
echo
say "done: alice Gold (12), bob Bronze (1 after the refund), carol Bronze (2), dana Bronze (0)"
