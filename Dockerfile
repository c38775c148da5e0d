# syntax=docker/dockerfile:1
# The skein binary on a distroless base, as a non-root user (uid 65532). Build from the
# repository root:  docker build -t registry.example.com/skein:0.1.0 .
# The deploy manifests (deploy/) expect this image: read-only root filesystem, no shell.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The caches only speed up rebuilds; --locked builds exactly Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p skein-node \
    && cp target/release/skein /usr/local/bin/skein

# glibc and libgcc of Debian 12, like the build stage; nothing else (no shell).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/skein /usr/local/bin/skein
USER 65532:65532
EXPOSE 3000 50051
ENTRYPOINT ["/usr/local/bin/skein"]
