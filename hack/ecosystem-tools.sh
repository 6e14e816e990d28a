#!/usr/bin/env bash
# Builds the ecosystem's own tools the tests check the project with, pinned, from their Go
# modules, into a cache outside the repository, and reuses them on later runs:
#   helm      (helm.sh/helm/v4)                    lint and render the chart
#   promtool  (github.com/prometheus/prometheus)   check /metrics and the alert rules
#   health    (hack/health: sigs.k8s.io/cli-utils kstatus, gopher-lua as Argo CD runs it)
#
#   hack/ecosystem-tools.sh          build what is missing, print the bin directory
#   hack/ecosystem-tools.sh --print  print the bin directory only (no build)
#
# Environment: RESERVE_TOOLS_DIR  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/reserve-operator)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

HELM_VERSION=v4.3.1
PROMETHEUS_VERSION=v0.316.0
# The health helper is rebuilt whenever its source or pins change.
health_key=$(cat "$repo/hack/health/go.mod" "$repo/hack/health/go.sum" "$repo/hack/health/main.go" | sha256sum | cut -c1-12)

cache_root=${RESERVE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/reserve-operator}
bin_dir="$cache_root/ecosystem-helm-$HELM_VERSION-prometheus-$PROMETHEUS_VERSION-health-$health_key/bin"

if [[ ${1:-} == "--print" ]]; then
  echo "$bin_dir"
  exit 0
fi

say() { echo "ecosystem-tools: $*" >&2; }

have() {
  [[ -x "$bin_dir/helm" ]] && "$bin_dir/helm" version --short >/dev/null 2>&1 &&
    [[ -x "$bin_dir/promtool" ]] && "$bin_dir/promtool" --version >/dev/null 2>&1 &&
    [[ -x "$bin_dir/health" ]]
}

# shellcheck source=hack/build-cache.sh
source "$(dirname "$0")/build-cache.sh"
reuse_or_lock "helm, promtool and health"

# A throwaway module per tool: `go install pkg@version` refuses modules with replace directives.
build() { # name module package version ldflags
  local name=$1 module=$2 package=$3 version=$4 ldflags=$5
  say "building $name $version (first time: a few minutes on 2 cores)"
  mkdir "$work/$name"
  (
    cd "$work/$name"
    go mod init "reserve-operator/$name-tool" >/dev/null 2>&1
    go mod edit -go=1.26.0
    go get "$package@$version" >/dev/null 2>&1 || go get "$package@$version"
    go build -ldflags "-s -w $ldflags" -o "$work/bin/$name" "$package"
  )
}
build helm helm.sh/helm/v4 helm.sh/helm/v4/cmd/helm "$HELM_VERSION" \
  "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
build promtool github.com/prometheus/prometheus github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION" \
  "-X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}"
say "building the health helper (hack/health)"
(cd "$repo/hack/health" && go build -ldflags "-s -w" -o "$work/bin/health" .)

mkdir -p "$bin_dir"
for b in helm promtool health; do
  mv -f "$work/bin/$b" "$bin_dir/$b"
done
have || { say "built tools do not answer --version"; exit 1; }
say "ready: $bin_dir ($("$bin_dir/helm" version --short), promtool $PROMETHEUS_VERSION)"
echo "$bin_dir"
