#!/usr/bin/env bash
# Builds pinned kube-apiserver, kubectl (k8s.io/kubernetes) and etcd, etcdctl, etcdutl
# (go.etcd.io/etcd) with the local Go toolchain into a cache outside the repository, and reuses
# them on later runs. With
# --node, also the node's kubelet, kube-controller-manager and kube-scheduler (same pin, same
# directory).
#
#   hack/control-plane-tools.sh          build what is missing, print the bin directory
#   hack/control-plane-tools.sh --node   the same, with the node's tools
#   hack/control-plane-tools.sh --print  print the bin directory only (no build)
#
# Environment:
#   RESERVE_TOOLS_DIR  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/reserve-operator)
set -euo pipefail

# One version in two places: this pin and the k8s-openapi feature in Cargo.toml (v1_37).
K8S_VERSION=v1.37.2
K8S_STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.7.3

cache_root=${RESERVE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/reserve-operator}
bin_dir="$cache_root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION/bin"

node=false
case ${1:-} in
  --print) echo "$bin_dir"; exit 0 ;;
  --node) node=true ;;
esac

say() { echo "control-plane-tools: $*" >&2; }

have_etcd() {
  [[ -x "$bin_dir/etcd" ]] && "$bin_dir/etcd" --version >/dev/null 2>&1 &&
    [[ -x "$bin_dir/etcdctl" ]] && "$bin_dir/etcdctl" version >/dev/null 2>&1 &&
    [[ -x "$bin_dir/etcdutl" ]] && "$bin_dir/etcdutl" version >/dev/null 2>&1
}
have_control_plane() {
  [[ -x "$bin_dir/kube-apiserver" ]] && "$bin_dir/kube-apiserver" --version >/dev/null 2>&1 &&
    [[ -x "$bin_dir/kubectl" ]] && "$bin_dir/kubectl" version --client >/dev/null 2>&1 &&
    have_etcd
}
have_node() {
  [[ -x "$bin_dir/kubelet" ]] && "$bin_dir/kubelet" --version >/dev/null 2>&1 &&
    [[ -x "$bin_dir/kube-controller-manager" ]] && "$bin_dir/kube-controller-manager" --version >/dev/null 2>&1 &&
    [[ -x "$bin_dir/kube-scheduler" ]] && "$bin_dir/kube-scheduler" --version >/dev/null 2>&1
}
have() { have_control_plane && { ! $node || have_node; }; }

# shellcheck source=hack/build-cache.sh
source "$(dirname "$0")/build-cache.sh"
reuse_or_lock "tools"

# What to build from k8s.io/kubernetes.
commands=()
have_control_plane || commands+=(kube-apiserver kubectl)
if $node && ! have_node; then commands+=(kubelet kube-controller-manager kube-scheduler); fi

# k8s.io/kubernetes points its staging modules (k8s.io/api, ...) at ./staging with replace
# directives, which `go install pkg@version` refuses. A throwaway module that requires it and
# replaces each staging module with its published version builds the same code.
if ((${#commands[@]})); then
  say "building ${commands[*]} $K8S_VERSION with $(go version | cut -d' ' -f3) (first time: minutes; all the tools took 20 on 2 cores on 2026-12-07)"
  mkdir "$work/k8s"
  (
    cd "$work/k8s"
    go mod init reserve-operator/control-plane-tools >/dev/null 2>&1
    go mod edit -go=1.26.0 -require="k8s.io/kubernetes@$K8S_VERSION"
    go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >"$work/k8s-mod.json"
    k8s_dir=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' "$work/k8s-mod.json")
    for m in $(sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$k8s_dir/go.mod"); do
      go mod edit -replace="$m=$m@$K8S_STAGING_VERSION"
    done
    say "resolving modules"
    packages=()
    for c in "${commands[@]}"; do packages+=("k8s.io/kubernetes/cmd/$c@$K8S_VERSION"); done
    go get "${packages[@]}" >/dev/null 2>&1 || go get "${packages[@]}"
    minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
    ldflags="-s -w"
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    for c in "${commands[@]}"; do
      say "compiling $c"
      go build -ldflags "$ldflags" -o "$work/bin/$c" "k8s.io/kubernetes/cmd/$c"
    done
  )
fi

# etcd, and its tools for snapshots: etcdctl saves one, etcdutl restores it (the backup tests).
if ! have_etcd; then
  say "building etcd, etcdctl and etcdutl $ETCD_VERSION"
  mkdir "$work/etcd"
  (
    cd "$work/etcd"
    go mod init reserve-operator/etcd-tools >/dev/null 2>&1
    go mod edit -go=1.26.0
    modules=("go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION"
      "go.etcd.io/etcd/etcdutl/v3@$ETCD_VERSION")
    go get "${modules[@]}" >/dev/null 2>&1 || go get "${modules[@]}"
    go build -ldflags "-s -w" -o "$work/bin/etcd" go.etcd.io/etcd/server/v3
    go build -ldflags "-s -w" -o "$work/bin/etcdctl" go.etcd.io/etcd/etcdctl/v3
    go build -ldflags "-s -w" -o "$work/bin/etcdutl" go.etcd.io/etcd/etcdutl/v3
  )
fi

mkdir -p "$bin_dir"
for b in "$work"/bin/*; do
  [[ -e $b ]] && mv -f "$b" "$bin_dir/"
done
have || { say "built binaries do not answer --version"; exit 1; }
say "ready: $bin_dir ($("$bin_dir/kube-apiserver" --version), etcd $ETCD_VERSION)"
echo "$bin_dir"
