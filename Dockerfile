# syntax=docker/dockerfile:1
# One image with both binaries: purposegate-server (the decision server and
# injection webhook) and purposegate-sidecar. Minimal and non-root.
#
#   docker build -t purposegate/purposegate:0.1.0 .

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits reuse the cached layer.
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY server server
COPY sidecar sidecar
COPY tests tests
COPY examples examples
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p purposegate-server -p purposegate-sidecar \
 && install -D -m 0755 target/release/purposegate-server /out/purposegate-server \
 && install -D -m 0755 target/release/purposegate-sidecar /out/purposegate-sidecar

# glibc, CA certificates, and nothing else; user 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/purposegate-server /out/purposegate-sidecar /usr/local/bin/
USER 65532:65532
# gRPC, metrics, webhook; the sidecar's proxy, local API and metrics.
EXPOSE 50051 8181 9090 8443 15001 15002 15090
ENTRYPOINT ["/usr/local/bin/purposegate-server"]
