# syntax=docker/dockerfile:1
#
# tether in a container: a release build on rust:1-slim-bookworm, run on debian:bookworm-slim
# as a non-root user with the production config (deploy/tether.toml).
#
# What was and was not run: the machine this was written on has no Docker daemon, so
# `docker build` and `docker run` of this file have NOT been run, and neither has the image's
# HEALTHCHECK inside a container. What was run, outside a container: the same build
# (`cargo build --release --locked --bin tether`), the binary started with deploy/tether.toml
# and the TETHER_API_KEY_FILE / TETHER_AUTH_HMAC_SECRET_FILE variables below (TETHER_LISTEN on
# a loopback port instead of 0.0.0.0), the HEALTHCHECK's bash command against it (exit 0 on
# 200), and SIGTERM (drained, exit 0).
#
#   docker build -t tether .
#   head -c 48 /dev/urandom | base64 -w0 > api_key
#   head -c 48 /dev/urandom | base64 -w0 > auth_hmac_secret
#   docker run --rm -p 8080:8080 --stop-timeout 45 \
#     -v "$PWD/api_key:/run/secrets/tether_api_key:ro" \
#     -v "$PWD/auth_hmac_secret:/run/secrets/tether_auth_hmac_secret:ro" tether
#
# The files must be readable by the image's user, uid 10001 (chmod 0444, or chown 10001).
# Without the two secrets it exits with code 2 and says which file is missing: a container
# listens on 0.0.0.0, and tether refuses a public address without an API key. `--stop-timeout`
# (compose: `stop_grace_period`) must exceed shutdown_timeout (30 s), or Docker kills the drain.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep the registry and compiled dependencies between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tether \
 && cp target/release/tether /usr/local/bin/tether

FROM debian:bookworm-slim
# ca-certificates: a Redis or webhook receiver behind TLS with the system's roots.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin tether
COPY --from=build /usr/local/bin/tether /usr/bin/tether
COPY deploy/tether.toml /etc/tether/tether.toml
# The file's loopback address and key paths, overridden for a container (variables beat the file).
ENV TETHER_LISTEN=0.0.0.0:8080 \
    TETHER_API_KEY_FILE=/run/secrets/tether_api_key \
    TETHER_AUTH_HMAC_SECRET_FILE=/run/secrets/tether_auth_hmac_secret \
    RUST_LOG=info
USER tether
EXPOSE 8080
STOPSIGNAL SIGTERM
# bash's /dev/tcp instead of curl: nothing more to install. 200 while serving; 503 draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -c 12 <&3 | grep -q ' 200'"]
ENTRYPOINT ["/usr/bin/tether", "--config", "/etc/tether/tether.toml"]
