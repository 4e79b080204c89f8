# syntax=docker/dockerfile:1
#
# The `egress` image: one binary for every subcommand (collector, monitor, migrate, decode, ...).
#
#   docker build -t egress:latest .
#   docker run --rm -p 2055:2055/udp -p 4739:4739/udp -p 6343:6343/udp -p 9477:9477 \
#     -e EGRESS__CLICKHOUSE__URL=http://clickhouse.example.net:8123 egress:latest
#
# Without arguments the container runs `egress collector --config /etc/egress/egress.toml`, the
# container defaults of deploy/container/egress.toml (listening on every interface). Mount your
# own file over /etc/egress/egress.toml, or override single keys with EGRESS__SECTION__KEY
# variables. Reference: deploy/README.md.

# ---- builder: dependencies first (a layer cached until Cargo.toml/Cargo.lock change), then the sources
FROM rust:1-bookworm AS builder
WORKDIR /src

# The workspace manifests and stub targets: `cargo build` then compiles every dependency of the
# `egress` package into a layer that source edits do not invalidate.
COPY Cargo.toml Cargo.lock ./
COPY collector/Cargo.toml collector/
COPY query/Cargo.toml query/
COPY alerts/Cargo.toml alerts/
COPY tests/testkit/Cargo.toml tests/testkit/
RUN for crate in collector query alerts tests/testkit; do \
        mkdir -p "$crate/src" && echo '' > "$crate/src/lib.rs"; \
    done \
    && mkdir -p src && echo 'fn main() {}' > src/main.rs \
    && cargo build --release --locked -p egress \
    && rm -rf src collector/src query/src alerts/src tests/testkit/src

# The real sources. Their files may be older than the stub build's artefacts, so they are
# touched to make cargo rebuild the workspace crates (and only those).
COPY src src
COPY collector/src collector/src
COPY query/src query/src
COPY alerts/src alerts/src
COPY tests/testkit/src tests/testkit/src
RUN find src collector/src query/src alerts/src tests/testkit/src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p egress --bin egress \
    && install -D -m 0755 target/release/egress /out/egress

# ---- runtime
FROM debian:bookworm-slim AS runtime
# ca-certificates: HTTPS to ClickHouse and to alert receivers. libcap2-bin: setcap for the
# `egress-netraw` copy below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libcap2-bin \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 egress \
    && useradd --system --uid 10001 --gid egress --home-dir /var/lib/egress --shell /usr/sbin/nologin egress \
    && install -d -o egress -g egress -m 0750 /var/lib/egress \
    && install -d -m 0755 /etc/egress
COPY --from=builder /out/egress /usr/local/bin/egress
# `egress-netraw` is the same binary with the file capability CAP_NET_RAW, for a monitor that
# sends ICMP echo probes or hop traces as the non-root user. Use it only where the container is
# granted NET_RAW and privilege escalation is allowed (file capabilities need both); see
# deploy/README.md. `egress` itself carries no capability.
RUN cp /usr/local/bin/egress /usr/local/bin/egress-netraw \
    && setcap cap_net_raw+ep /usr/local/bin/egress-netraw
COPY deploy/container/egress.toml /etc/egress/egress.toml

# NetFlow v5/v9, IPFIX and sFlow v5 (collector.listen; any port takes any protocol).
EXPOSE 2055/udp 4739/udp 6343/udp
# The collector's /metrics and /health (collector.metrics_listen).
EXPOSE 9477/tcp
# The monitor's query API, /health, /ready and /metrics (monitor.listen).
EXPOSE 9478/tcp

USER 10001:10001
WORKDIR /var/lib/egress
ENTRYPOINT ["egress"]
CMD ["collector", "--config", "/etc/egress/egress.toml"]
