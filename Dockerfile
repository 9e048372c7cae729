# syntax=docker/dockerfile:1
#
# Vigil container image.
#
#   docker build -t vigil .
#   docker run --rm vigil                                    # embedded demo (no Kafka needed)
#   docker run --rm -e VIGIL__KAFKA__BROKERS=kafka:9092 vigil # against a cluster
#   docker run --rm -v $PWD/vigil.toml:/etc/vigil/vigil.toml:ro \
#     -e VIGIL_CONFIG=/etc/vigil/vigil.toml vigil            # with a config file
#
# Configuration: VIGIL__SECTION__KEY environment variables, or a TOML file
# named by VIGIL_CONFIG / --config (docs/configuration.md).

########## build ##########
FROM rust:1-bookworm AS build

# librdkafka is built from source by rdkafka-sys (cmake-build, ssl, sasl).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev libzstd-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY services ./services
COPY benchmarks ./benchmarks
# The profile-guided build trains on the rule pack and the samples.
COPY scripts ./scripts
COPY sql-rules ./sql-rules
COPY samples ./samples

# PGO=1 (the default): profile-guided build (scripts/build-release.sh; about
# twice the build time, faster replays and detection: docs/benchmarks.md).
# PGO=0: the plain release build.
ARG PGO=1

# The cache mounts keep the registry and build artifacts between builds
# (BuildKit); the binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    if [ "$PGO" = 1 ]; then \
      rustup component add llvm-tools \
      && install -m 0755 "$(scripts/build-release.sh)" /usr/local/bin/vigil; \
    else \
      cargo build --release --locked -p vigil \
      && install -m 0755 target/release/vigil /usr/local/bin/vigil; \
    fi

########## runtime ##########
FROM debian:bookworm-slim

# The binary links libssl3, libsasl2-2 and zlib1g dynamically (ldd); libcurl4
# and libzstd1 are kept for librdkafka builds that enable them. For Kerberos
# (sasl.mechanism=GSSAPI) also install libsasl2-modules-gssapi-mit.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libssl3 libsasl2-2 libcurl4 zlib1g libzstd1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 vigil \
 && useradd --system --uid 10001 --gid vigil --home-dir /opt/vigil --shell /usr/sbin/nologin vigil

COPY --from=build /usr/local/bin/vigil /usr/local/bin/vigil

# rules.dir defaults to "sql-rules" and --samples to "samples", both relative
# to the working directory.
WORKDIR /opt/vigil
COPY sql-rules ./sql-rules
COPY samples ./samples

# Numeric user so that Kubernetes runAsNonRoot can verify it.
USER 10001:10001
ENV RUST_LOG=info

# The operations HTTP server (http.listen): /metrics, /healthz, /readyz.
EXPOSE 9464

# Vigil handles SIGTERM itself (finishes the current batch, commits, exits).
# No HEALTHCHECK: the image has no HTTP client to call /healthz with;
# orchestrators probe it directly (deploy/kubernetes/vigil.yaml).
ENTRYPOINT ["vigil"]
CMD ["run"]
