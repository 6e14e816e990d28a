#!/usr/bin/env bash
# Builds an OCI image without Docker and without a registry, with buildah: `FROM scratch`, the
# binary, the shared libraries `ldd` names, /etc/passwd and /etc/group with the non-root user
# 65532, an empty /tmp; written as an OCI archive.
#
#   hack/image.sh operator         target/image/reserve-operator-<version>.oci.tar (reserve-operator:<version>)
#   hack/image.sh operator-prime   target/image/reserve-operator-<version>-prime.oci.tar: the same
#                                  binary in a new image (another tag and digest), for the tests'
#                                  rolling update from this code to this code
#   hack/image.sh pause DIR        DIR/pause.oci.tar (reserve.local/pause:1), the test node's sandbox image
#
# Needs buildah (Debian: buildah); the pause image needs gcc with static libc (libc6-dev).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

say() { echo "image: $*" >&2; }
command -v buildah >/dev/null || { say "buildah is required (apt-get install buildah)"; exit 1; }

# buildah keeps its own storage under the target directory, away from any system storage.
store=${RESERVE_IMAGE_STORE:-$repo/target/image/storage}
buildah_() { buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs "$@"; }

work=$(mktemp -d)
container=
cleanup() {
  [[ -z $container ]] || buildah_ rm "$container" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# rootfs DIR BINARY NAME: the binary as /NAME, its shared libraries, the non-root user.
rootfs() {
  local root=$1 binary=$2 name=$3
  install -D -m 0755 "$binary" "$root/$name"
  strip "$root/$name"
  for lib in $(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    # The dynamic loader must be executable: the kernel opens it like the program itself.
    install -D -m 0755 "$lib" "$root$lib"
  done
  mkdir -p "$root/etc" "$root/tmp"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
}

# image ROOT REF ARCHIVE CONFIG...: commit ROOT as REF and write it to ARCHIVE.
image() {
  local root=$1 ref=$2 archive=$3
  shift 3
  container=$(buildah_ from scratch)
  buildah_ copy "$container" "$root" / >/dev/null
  buildah_ config "$@" "$container"
  buildah_ commit --quiet --format oci "$container" "$ref" >/dev/null
  mkdir -p "$(dirname "$archive")"
  rm -f "$archive"
  buildah_ push --quiet "$ref" "oci-archive:$archive:$ref"
  buildah_ rm "$container" >/dev/null
  container=
  buildah_ rmi "$ref" >/dev/null
  say "wrote $archive ($ref, $(du -h "$archive" | cut -f1))"
  echo "$archive"
}

case ${1:-} in
  operator | operator-prime)
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
    tag=$version
    extra=()
    if [[ $1 == operator-prime ]]; then
      tag=$version-prime
      extra=(--label org.opencontainers.image.revision=prime)
    fi
    cargo build --quiet --release -p reserve-operator
    rootfs "$work/root" target/release/reserve-operator reserve-operator
    # The same user, entrypoint, command and port as the Dockerfile (a test checks).
    image "$work/root" "reserve-operator:$tag" "target/image/reserve-operator-$tag.oci.tar" \
      --user 65532:65532 --entrypoint '["/reserve-operator"]' --cmd '["run"]' --port 8080/tcp \
      --label org.opencontainers.image.title=reserve-operator \
      --label "org.opencontainers.image.version=$version" "${extra[@]}"
    ;;
  pause)
    out=${2:?usage: hack/image.sh pause DIR}
    gcc -static -O2 -o "$work/pause" hack/node/pause.c
    mkdir -p "$work/root"
    install -D -m 0755 "$work/pause" "$work/root/pause"
    strip "$work/root/pause"
    image "$work/root" reserve.local/pause:1 "$out/pause.oci.tar" --entrypoint '["/pause"]'
    ;;
  *)
    echo "usage: hack/image.sh operator | pause DIR" >&2
    exit 2
    ;;
esac
