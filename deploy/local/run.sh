#!/usr/bin/env bash
# The local run: installs what is missing, builds Egress, starts ClickHouse on loopback (data in
# .local/clickhouse), creates the schema, and starts `egress run` (the collector plus simulated
# edge routers) in the background. `deploy/local/run.sh stop` stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
state="$root/.local"
mkdir -p "$state"
ch_http=18123
ch_tcp=19000

stop() {
  if [ -f "$state/egress.pid" ]; then
    kill "$(cat "$state/egress.pid")" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$(cat "$state/egress.pid")" 2>/dev/null || break; sleep 0.5; done
    rm -f "$state/egress.pid"
  fi
  deploy/local/clickhouse.sh stop "$state/clickhouse" || true
}

if [ "${1:-}" = "stop" ]; then
  stop
  echo "stopped"
  exit 0
fi

scripts/install-deps.sh
echo "== building egress (release)"
cargo build --release --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
egress="$target_dir/release/egress"

stop >/dev/null 2>&1 || true
echo "== starting ClickHouse on 127.0.0.1:$ch_http (data in .local/clickhouse)"
deploy/local/clickhouse.sh start "$state/clickhouse" "$ch_http" "$ch_tcp"

echo "== creating the schema"
"$egress" migrate --config deploy/local/egress.toml

echo "== starting the collector, the monitor and simulated edge routers (log: .local/egress.log)"
nohup "$egress" run --config deploy/local/egress.toml \
  --simulate netflow9=2000 --simulate ipfix=2000 --simulate netflow5=1000 --simulate sflow5=500 \
  >"$state/egress.log" 2>&1 &
echo $! >"$state/egress.pid"

query() { curl -sf "http://127.0.0.1:$ch_http/" --data-binary "$1"; }
echo -n "== waiting for flows"
for _ in $(seq 1 60); do
  n=$(query "SELECT count() FROM egress.flows" 2>/dev/null || echo 0)
  [ "${n:-0}" -gt 0 ] && break
  echo -n "."
  sleep 1
done
echo
query "SELECT flow_type, count() AS records, sum(bytes * sampling_rate) AS scaled_bytes, any(sampling_source) AS sampling_source FROM egress.flows GROUP BY flow_type ORDER BY flow_type FORMAT PrettyCompact"

cat <<MSG

Egress is running.
  egress paths: curl -s http://127.0.0.1:9478/api/v1/paths
  SLA verdicts: curl -s http://127.0.0.1:9478/api/v1/slas
  alerts:       curl -s http://127.0.0.1:9478/api/v1/alerts
  metrics:     curl -s http://127.0.0.1:9477/metrics | grep ^egress_
  flows:       clickhouse-client --port $ch_tcp -q "SELECT * FROM egress.flows LIMIT 10 FORMAT Vertical"
  HTTP SQL:    curl http://127.0.0.1:$ch_http/ --data-binary "SELECT count() FROM egress.flows"
  loss/errors: clickhouse-client --port $ch_tcp -q "SELECT * FROM egress.exporter_stats ORDER BY minute DESC LIMIT 10"
  log:         .local/egress.log
  stop:        deploy/local/run.sh stop
MSG
