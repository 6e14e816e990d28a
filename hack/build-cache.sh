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
  command -v go >/dev/null || { say "Go is required to build $1 (none on PATH)"; exit 1; }
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
