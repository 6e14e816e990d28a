#!/usr/bin/env bash
# Builds what the Velero restore test needs, pinned, into the cache beside the other tools, and
# reuses it on later runs:
#   velero                   (github.com/vmware-tanzu/velero)        the server and the CLI
#   velero-plugin-for-aws    (github.com/vmware-tanzu/velero-plugin-for-aws)  its object store
#   moto/bin/moto_server     (moto[server] from PyPI, in a virtualenv)  an S3 on loopback
#
#   hack/velero-tools.sh          build what is missing, print the bin directory
#   hack/velero-tools.sh --print  print the bin directory only (no build)
#
# Environment: RESERVE_TOOLS_DIR  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/reserve-operator)
set -euo pipefail

VELERO_VERSION=v1.18.3
AWS_PLUGIN_VERSION=v1.14.3
MOTO_VERSION=5.1.0
# Velero's go.mod replaces kopia with its own fork, and pins Kubernetes modules that its
# dependencies would otherwise raise past what it builds with: a throwaway module repeats both.
KOPIA_FORK=github.com/project-velero/kopia@v0.0.0-20251230033609-d946b1e75197
K8S_MODULES_VERSION=v0.33.13
K8S_MODULES=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go component-base kube-aggregator metrics)

cache_root=${RESERVE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/reserve-operator}
bin_dir="$cache_root/velero-$VELERO_VERSION-aws-$AWS_PLUGIN_VERSION-moto-$MOTO_VERSION/bin"

if [[ ${1:-} == "--print" ]]; then
  echo "$bin_dir"
  exit 0
fi

say() { echo "velero-tools: $*" >&2; }

have() {
  [[ -x "$bin_dir/velero" ]] && "$bin_dir/velero" version --client-only >/dev/null 2>&1 &&
    [[ -x "$bin_dir/plugins/velero-plugin-for-aws" ]] &&
    [[ -x "$bin_dir/moto/bin/moto_server" ]]
}

# shellcheck source=hack/build-cache.sh
source "$(dirname "$0")/build-cache.sh"
reuse_or_lock "velero, its AWS plugin and moto"
command -v python3 >/dev/null || { say "python3 is required for moto (none on PATH)"; exit 1; }

say "building velero $VELERO_VERSION and its AWS plugin $AWS_PLUGIN_VERSION (first time: about 7 minutes on 2 cores)"
mkdir "$work/velero"
(
  cd "$work/velero"
  go mod init reserve-operator/velero-tool >/dev/null 2>&1
  go mod edit -go=1.26.0 -require="github.com/vmware-tanzu/velero@$VELERO_VERSION" \
    -replace="github.com/kopia/kopia=$KOPIA_FORK"
  for m in "${K8S_MODULES[@]}"; do
    go mod edit -require="k8s.io/$m@$K8S_MODULES_VERSION"
  done
  go get "github.com/vmware-tanzu/velero/cmd/velero@$VELERO_VERSION" >/dev/null 2>&1 ||
    go get "github.com/vmware-tanzu/velero/cmd/velero@$VELERO_VERSION"
  go build -ldflags "-s -w -X github.com/vmware-tanzu/velero/pkg/buildinfo.Version=$VELERO_VERSION" \
    -o "$work/bin/velero" github.com/vmware-tanzu/velero/cmd/velero
)
mkdir "$work/plugin"
(
  cd "$work/plugin"
  go mod init reserve-operator/velero-plugin-tool >/dev/null 2>&1
  go mod edit -go=1.26.0
  plugin=github.com/vmware-tanzu/velero-plugin-for-aws/velero-plugin-for-aws
  go get "$plugin@$AWS_PLUGIN_VERSION" >/dev/null 2>&1 || go get "$plugin@$AWS_PLUGIN_VERSION"
  go build -ldflags "-s -w" -o "$work/bin/velero-plugin-for-aws" "$plugin"
)
rm -rf "$bin_dir"
mkdir -p "$bin_dir/plugins"
mv "$work/bin/velero" "$bin_dir/velero"
mv "$work/bin/velero-plugin-for-aws" "$bin_dir/plugins/velero-plugin-for-aws"
# A virtualenv is not relocatable: made where it stays.
say "installing moto[server] $MOTO_VERSION from PyPI"
python3 -m venv "$bin_dir/moto"
"$bin_dir/moto/bin/pip" install --quiet "moto[server]==$MOTO_VERSION"
have || { say "built tools do not answer"; exit 1; }
say "ready: $bin_dir"
echo "$bin_dir"
