# Assent in a container: build with Rust's Debian image, run on a slim Debian with nothing but the
# binary (and curl for the health check). `docker compose up` (docker-compose.yml) runs two of these
# behind a load balancer, on Postgres and Redis.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin assent \
    && cp target/release/assent /usr/local/bin/assent

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/assent assent
COPY --from=build /usr/local/bin/assent /usr/local/bin/assent
USER assent
WORKDIR /var/lib/assent
ENV ASSENT_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=6 \
    CMD curl -fsS http://127.0.0.1:8080/readyz >/dev/null || exit 1
ENTRYPOINT ["assent"]
CMD ["serve"]
