#!/usr/bin/env bash
# The convergence benchmark (benches/converge.rs): builds the operator in release, then runs the
# bench, which starts its own control plane (target/bench/cluster), runs the operator as its own
# process, and writes its figures to target/bench/. Arguments go to the bench, e.g.
#
#   hack/bench.sh                     # 1,000 customers, 20,000 orders
#   hack/bench.sh --sweep             # 1,000 customers, 1,000 / 5,000 / 20,000 orders
#   hack/bench.sh --orders 100000     # any size; --help lists every option
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
export RESERVE_BENCH_CLUSTER_DIR=${RESERVE_BENCH_CLUSTER_DIR:-$target/bench/cluster}
# The bench stops the control plane itself; this catches a bench killed before it could.
[[ " $* " == *" --keep-cluster "* ]] ||
  trap 'RESERVE_CLUSTER_DIR=$RESERVE_BENCH_CLUSTER_DIR hack/local-cluster.sh down >/dev/null 2>&1 || true' EXIT
hack/control-plane-tools.sh >/dev/null
cargo build --release --bin reserve-operator
cargo bench --bench converge -- "$@"
