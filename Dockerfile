# syntax=docker/dockerfile:1
# reserve-operator image: `docker build -t reserve-operator:0.2.0 .` (the tag is the crate
# version, as in manifests/operator). Without Docker, `make image` builds the same image (same
# user, entrypoint, command and port; a test checks) with buildah.
# The result runs as UID 65532 with no shell and no package manager.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and the build directory are cache mounts: a rebuild compiles only what changed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p reserve-operator \
 && install -D -s -m 0755 target/release/reserve-operator /out/reserve-operator \
 && /out/reserve-operator --version

# glibc and libgcc (what a Rust binary links), a nonroot user (65532), nothing else. TLS is
# rustls and the operator trusts the cluster CA, so there is no OpenSSL and no CA bundle.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="reserve-operator" \
      org.opencontainers.image.description="Derives coffee-chain loyalty levels for Customers from their Orders" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/reserve-operator /reserve-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/reserve-operator"]
CMD ["run"]
