#!/usr/bin/env bash
# The previous release of the operator, built from this repository's own history, for the
# upgrade and downgrade tests: the commit pinned below, extracted under the target directory,
# its package renamed (so its binary, reserve-operator-previous, sits beside this tree's) and
# built into this tree's target directory. Its Cargo.lock pins the same crates as this tree's,
# so only its own crate compiles: minutes, not a second cold build. Prints the binary's path.
#
#   hack/previous-release.sh            a debug build (what the tests start as a process)
#   hack/previous-release.sh --release  a release build (what its image holds)
#   hack/previous-release.sh --version  the previous release's version
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

# The last commit of 0.1.0. Move both together when a release is made.
PREVIOUS_VERSION=0.1.0
PREVIOUS_COMMIT=c814454eeda884d0ce07255a2d164eeeb5da2183

say() { echo "previous-release: $*" >&2; }

profile=debug
flags=()
case ${1:-} in
  --version) echo "$PREVIOUS_VERSION"; exit 0 ;;
  --release) profile=release; flags+=(--release) ;;
  "") ;;
  *) say "usage: hack/previous-release.sh [--release | --version]"; exit 2 ;;
esac

target=${CARGO_TARGET_DIR:-$repo/target}
[[ $target = /* ]] || target=$repo/$target
src=$target/previous/$PREVIOUS_VERSION
bin=reserve-operator-previous

if [[ ! -f $src/.extracted ]]; then
  git -C "$repo" cat-file -e "$PREVIOUS_COMMIT^{commit}" 2>/dev/null || {
    say "commit $PREVIOUS_COMMIT ($PREVIOUS_VERSION) is not in this clone: fetch the full history (git fetch --unshallow)"
    exit 1
  }
  rm -rf "$src"
  mkdir -p "$src"
  git -C "$repo" archive "$PREVIOUS_COMMIT" | tar -x -C "$src"
  # The package under another name, its library and binary named as before and after.
  sed -i \
    -e '0,/^name = "reserve-operator"$/s//name = "reserve-operator-previous"/' \
    -e 's|^reserve-operator = { path = "." }$|reserve-operator = { path = ".", package = "reserve-operator-previous" }|' \
    "$src/Cargo.toml"
  printf '\n[lib]\nname = "reserve_operator"\n\n[[bin]]\nname = "%s"\npath = "src/main.rs"\n' "$bin" >>"$src/Cargo.toml"
  grep -q '^name = "reserve-operator-previous"$' "$src/Cargo.toml" || {
    say "could not rename the package in $src/Cargo.toml"
    exit 1
  }
  touch "$src/.extracted"
fi

say "building $PREVIOUS_VERSION ($profile)"
cargo build --quiet "${flags[@]}" --manifest-path "$src/Cargo.toml" --target-dir "$target" \
  -p reserve-operator-previous --bin "$bin" >&2
echo "$target/$profile/$bin"
