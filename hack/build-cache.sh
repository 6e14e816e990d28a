# Sourced by the tools scripts, after they define `say`, `have`, $cache_root and $bin_dir.
#
# reuse_or_lock WHAT: prints $bin_dir and exits when `have` finds the tools cached; otherwise
# takes the cache's build lock (a concurrent build, e.g. of another test binary, is waited for,
# not raced), checks again, and leaves a scratch directory in $work (removed on exit) with the
# Go settings for reproducible static builds.
reuse_or_lock() {
  if have; then
    say "using cached $1 in $bin_dir"
    echo "$bin_dir"
    exit 0
  fi
  require_go "$1"
  mkdir -p "$cache_root"
  exec 9>"$cache_root/.build.lock"
  if ! flock -n 9; then
    say "another build is running; waiting for it"
    flock 9
  fi
  if have; then
    echo "$bin_dir"
    exit 0
  fi
  work=$(mktemp -d "$cache_root/.build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/bin"
  export GOFLAGS="-buildvcs=false -trimpath" CGO_ENABLED=0
}

# require_go WHAT: a Go that can fetch the pinned toolchain (1.21 or later does, through the
# module proxy, as GOTOOLCHAIN below asks), or a message that says where to get one.
require_go() {
  local get="any Go from 1.21 on fetches Go 1.26.8 by itself: https://go.dev/dl/ (Debian 12's golang-go is 1.19; bookworm-backports has a newer one)"
  command -v go >/dev/null || { say "Go is required to build $1 and none is on PATH; $get"; exit 1; }
  local minor
  minor=$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
  if [[ -z $minor || $minor -lt 21 ]]; then
    say "$(go version | cut -d" " -f3) cannot build $1; $get"
    exit 1
  fi
  export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.26.8+auto}
}
