#!/usr/bin/env bash
# A local control plane (etcd + kube-apiserver, no nodes) for the demo and for exploring.
#
#   hack/local-cluster.sh up     start it (or reuse a running one), install the CRDs, print the kubeconfig path
#   hack/local-cluster.sh down   stop it and delete its data
#   hack/local-cluster.sh env    print `export KUBECONFIG=...`
#
# The API server writes an audit log (metadata of every request) to $dir/audit.log.
# State lives in $RESERVE_CLUSTER_DIR (default: ${XDG_STATE_HOME:-~/.local/state}/reserve-operator/cluster).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${RESERVE_CLUSTER_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/reserve-operator/cluster}
kubeconfig="$dir/kubeconfig"

say() { echo "local-cluster: $*" >&2; }

running() { [[ -f "$dir/apiserver.pid" ]] && kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

down() {
  for p in apiserver etcd; do
    if [[ -f "$dir/$p.pid" ]]; then
      kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$(cat "$dir/$p.pid")" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$(cat "$dir/$p.pid")" 2>/dev/null || true
    fi
  done
  rm -rf "$dir"
  say "stopped"
}

up() {
  if running; then
    say "already running ($kubeconfig)"
    echo "$kubeconfig"
    return
  fi
  bin=$("$repo/hack/control-plane-tools.sh")
  rm -rf "$dir" && mkdir -p "$dir/pki" "$dir/etcd"
  local etcd_port etcd_peer api_port token
  etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port)
  token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

  say "generating certificates"
  (
    cd "$dir/pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=reserve-local-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 30 -extfile san.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  echo "$token,admin,admin,system:masters" >"$dir/tokens.csv"
  # Request metadata of every call, so figures such as writes per order can be counted.
  cat >"$dir/audit-policy.yaml" <<POLICY
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
POLICY

  say "starting etcd on 127.0.0.1:$etcd_port"
  "$bin/etcd" --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" --initial-cluster "default=http://127.0.0.1:$etcd_peer" \
    --unsafe-no-fsync --log-level error >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"

  say "starting kube-apiserver on https://127.0.0.1:$api_port"
  "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" --bind-address 127.0.0.1 \
    --secure-port "$api_port" --advertise-address 127.0.0.1 \
    --tls-cert-file "$dir/pki/apiserver.crt" --tls-private-key-file "$dir/pki/apiserver.key" \
    --client-ca-file "$dir/pki/ca.crt" --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$dir/pki/sa.pub" \
    --service-account-signing-key-file "$dir/pki/sa.key" --service-cluster-ip-range 10.96.0.0/16 \
    --audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/audit.log" --audit-log-mode batch \
    --audit-log-batch-max-wait 1s --enable-priority-and-fairness=false --disable-admission-plugins ServiceAccount --endpoint-reconciler-type none \
    >"$dir/apiserver.log" 2>&1 &
  echo $! >"$dir/apiserver.pid"

  cat >"$kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 "$dir/pki/ca.crt")
users:
- name: admin
  user:
    token: $token
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
KUBECONFIG

  say "waiting for the API server to be ready"
  for i in $(seq 120); do
    if "$bin/kubectl" --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1; then break; fi
    running || { say "kube-apiserver exited; see $dir/apiserver.log"; tail -5 "$dir/apiserver.log" >&2; exit 1; }
    sleep 0.5
    [[ $i == 120 ]] && { say "kube-apiserver not ready after 60s; see $dir/apiserver.log"; exit 1; }
  done
  say "installing the CRDs"
  "$bin/kubectl" --kubeconfig "$kubeconfig" apply -k "$repo/manifests/crds" >/dev/null
  "$bin/kubectl" --kubeconfig "$kubeconfig" wait --for condition=established --timeout=60s \
    crd/customers.reserve.coffeechain.io crd/orders.reserve.coffeechain.io >/dev/null
  say "ready"
  echo "$kubeconfig"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  env) echo "export KUBECONFIG=$kubeconfig PATH=$("$repo/hack/control-plane-tools.sh" --print):\$PATH" ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
