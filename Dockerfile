# syntax=docker/dockerfile:1
# One image for every stage: the six service binaries and `choreo`, stripped, on a small Debian base.
#   docker build -t choreo .
#   docker run --rm choreo choreo --help
# Each ECS service (and each docker-compose service) runs one binary: `choreo-validator`, ...

# Build. Cargo's registry and the target directory are BuildKit cache mounts, so a rebuild after a
# code change recompiles Choreo's crates, not the dependencies.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The release profile keeps line tables (380 MB for `choreo`); the image wants them stripped (49 MB).
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=true \
    CARGO_TERM_COLOR=never
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && cp target/release/choreo target/release/choreo-ingestor target/release/choreo-validator \
          target/release/choreo-quarantine target/release/choreo-crawler \
          target/release/choreo-transformer target/release/choreo-auditor /out/

# Run. curl is for the container health checks (every service's /health on its ops port);
# ca-certificates for TLS to AWS.
FROM debian:bookworm-slim
# Versions are not pinned: Debian's security updates reach the image when it is rebuilt.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/choreo --create-home choreo
COPY --from=build /out/ /usr/local/bin/
COPY deploy/config/ /etc/choreo/
# JSON log lines by default (CloudWatch Logs and docker logs keep one event per line); the
# configuration is the example in deploy/config, replaced by mounting or copying your own.
ENV CHOREO_LOG_FORMAT=json \
    CHOREO_CONFIG=/etc/choreo/choreo.toml \
    CHOREO_BACKEND=aws \
    RUST_LOG=info
USER 10001
WORKDIR /var/lib/choreo
# SIGTERM (docker stop, an ECS task stopping) makes a service stop receiving, finish the messages in
# hand and exit: give it the stop timeout it needs (ECS: stopTimeout; compose: stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["choreo", "--help"]
