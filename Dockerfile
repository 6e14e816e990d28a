# syntax=docker/dockerfile:1
# reserve-operator image: `docker build -t reserve-operator:latest .`
# The result runs as UID 65532 with no shell and no package manager; the Deployment in
# manifests/operator/ runs it with `run --log-format json` on a read-only root filesystem.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

# 1. Dependencies only, cached until Cargo.toml or Cargo.lock change: build the crate with
#    empty sources so every dependency is compiled into this layer. Cargo refuses a manifest
#    whose explicit [[bench]]/[[test]]/[[example]] targets have no file, so those get empty
#    placeholders too (they are never compiled: only the binary is built).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && awk ' \
      function flush() { \
        if (kind != "" && name != "") { \
          f = path; \
          if (f == "") f = (kind == "bench" ? "benches" : kind == "test" ? "tests" : "examples") "/" name ".rs"; \
          print f; \
        } \
        kind = ""; name = ""; path = ""; \
      } \
      /^\[\[(bench|test|example)\]\]/ { flush(); kind = $0; gsub(/[][ \t]/, "", kind); next } \
      /^\[/ { flush(); next } \
      kind != "" && $1 == "name" { name = $3; gsub(/"/, "", name) } \
      kind != "" && $1 == "path" { path = $3; gsub(/"/, "", path) } \
      END { flush() }' Cargo.toml \
    | while read -r f; do mkdir -p "$(dirname "$f")" && touch "$f"; done \
 && cargo build --release --locked --bin reserve-operator \
 && rm -rf src \
      target/release/reserve-operator* \
      target/release/deps/reserve_operator-* \
      target/release/deps/libreserve_operator-* \
      target/release/.fingerprint/reserve-operator-*

# 2. The crate itself. COPY keeps the files' modification times, which may be older than the
#    placeholder build above; touching them makes Cargo rebuild the crate for certain.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin reserve-operator \
 && install -D -s -m 0755 target/release/reserve-operator /out/reserve-operator \
 && /out/reserve-operator --version

# glibc and libgcc (what a Rust binary links), CA certificates, a nonroot user (65532), nothing
# else. TLS is rustls, so there is no OpenSSL dependency.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="reserve-operator" \
      org.opencontainers.image.description="Derives coffee-chain loyalty levels for Customers from their Orders" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/reserve-operator /reserve-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/reserve-operator"]
CMD ["run"]
