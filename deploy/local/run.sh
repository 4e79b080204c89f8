#!/usr/bin/env bash
# The local run and demo: installs what is missing, builds Egress, starts ClickHouse on loopback
# (data in .local/clickhouse), creates the schema, starts Alertmanager on loopback (when
# installed), the demo's probe targets behind network namespaces (egress-demo-net, root only),
# and `egress run --scenario demo`: the collector, the monitor and simulated edge routers whose
# traffic plays the demo timeline (collector/src/simulate/scenario.rs):
#   +60 s   a host starts exfiltrating          -> the exfiltration SLA fires
#   +120 s  a backup saturates a transit path   -> the throughput SLA fires
#   +180 s  a probe target slows down           -> the latency SLA fires
# Alerts fire about 30-60 s after each step (SLA windows and `for` in deploy/local/egress.toml).
#
#   deploy/local/run.sh          start (again: everything it started before is stopped first)
#   deploy/local/run.sh stop     stop everything it started
#   EGRESS_DEMO_SPEED=4 deploy/local/run.sh   play the timeline 4 times faster
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
state="$root/.local"
mkdir -p "$state"
ch_http=18123
ch_tcp=19000
metrics_port=9477
api_port=9478
am_port=9093
speed=${EGRESS_DEMO_SPEED:-1}

# Stops the process whose pid is in $state/$1.pid: SIGTERM, then SIGKILL after 30 s.
stop_pid() {
  local file="$state/$1.pid"
  [ -f "$file" ] || return 0
  local pid
  pid=$(cat "$file")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop() {
  stop_pid egress
  stop_pid demo-net
  stop_pid alertmanager
  deploy/local/clickhouse.sh stop "$state/clickhouse" || true
}

if [ "${1:-}" = "stop" ]; then
  stop
  echo "stopped"
  exit 0
fi

scripts/install-deps.sh
echo "== building egress and egress-demo-net (release)"
cargo build --release --quiet -p egress -p egress-testkit --bin egress --bin egress-demo-net
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
egress="$target_dir/release/egress"
demo_net="$target_dir/release/egress-demo-net"

stop >/dev/null 2>&1 || true
busy=""
for port in $ch_http $ch_tcp $metrics_port $api_port $am_port; do
  if ss -Hltn "sport = :$port" | grep -q .; then busy="$busy $port"; fi
done
if [ -n "$busy" ]; then
  echo "ports in use by another program:$busy (see: ss -ltnp); stop it and run again" >&2
  exit 1
fi

# Each run plays the timeline from its start: forget the alerts of the previous run (the flows
# stay in ClickHouse).
rm -rf "$state/alerts.json" "$state/alertmanager"

echo "== starting ClickHouse on 127.0.0.1:$ch_http (data in .local/clickhouse)"
deploy/local/clickhouse.sh start "$state/clickhouse" "$ch_http" "$ch_tcp"

echo "== creating the schema"
"$egress" migrate --config deploy/local/egress.toml

sets=()
alertmanager=$(command -v prometheus-alertmanager || true)
if [ -n "$alertmanager" ]; then
  echo "== starting Alertmanager on 127.0.0.1:$am_port (log: .local/alertmanager.log)"
  nohup "$alertmanager" --config.file=deploy/local/alertmanager.yml --storage.path="$state/alertmanager" \
    --web.listen-address=127.0.0.1:$am_port --cluster.listen-address= --log.level=warn \
    >"$state/alertmanager.log" 2>&1 &
  echo $! >"$state/alertmanager.pid"
else
  echo "== prometheus-alertmanager is not installed: alerts stay in Egress (API and status page)"
  sets+=(--set "alerting.receivers=[]")
fi

echo "== starting the demo's probe targets (log: .local/demo-net.log)"
rm -f "$state/demo-probes.toml"
nohup "$demo_net" --out "$state/demo-probes.toml" --speed "$speed" >"$state/demo-net.log" 2>&1 &
echo $! >"$state/demo-net.pid"
for _ in $(seq 1 100); do
  [ -s "$state/demo-probes.toml" ] && break
  kill -0 "$(cat "$state/demo-net.pid")" 2>/dev/null || break
  sleep 0.1
done
if [ -s "$state/demo-probes.toml" ]; then
  sets+=(--set "probes.paths=$(cat "$state/demo-probes.toml")")
  head -n 1 "$state/demo-net.log"
else
  rm -f "$state/demo-net.pid"
  echo "   the latency scenario is off: $(tail -n 1 "$state/demo-net.log")"
fi

echo "== starting the collector, the monitor and simulated edge routers with the demo scenario (log: .local/egress.log)"
since=$(date +%s)
nohup "$egress" run --config deploy/local/egress.toml "${sets[@]}" \
  --simulate netflow9=2000 --simulate ipfix=2000 --simulate netflow5=1000 --simulate sflow5=500 \
  --scenario demo --scenario-speed "$speed" \
  >"$state/egress.log" 2>&1 &
echo $! >"$state/egress.pid"

query() { curl -sf "http://127.0.0.1:$ch_http/" --data-binary "$1"; }
echo -n "== waiting for this run's flows"
for _ in $(seq 1 60); do
  n=$(query "SELECT count() FROM egress.flows WHERE time_received >= toDateTime($since)" 2>/dev/null || echo 0)
  [ "${n:-0}" -gt 0 ] && break
  kill -0 "$(cat "$state/egress.pid")" 2>/dev/null || { echo; tail -n 20 "$state/egress.log" >&2; exit 1; }
  echo -n "."
  sleep 1
done
echo
sleep 3
echo "== stored in the first seconds:"
query "SELECT flow_type, count() AS records, sum(bytes * sampling_rate) AS scaled_bytes, any(sampling_source) AS sampling_source FROM egress.flows WHERE time_received >= toDateTime($since) GROUP BY flow_type ORDER BY flow_type FORMAT PrettyCompactNoEscapes"
echo "== the demo timeline (from now; EGRESS_DEMO_SPEED=$speed):"
grep -o 'scenario +[0-9]*s: .*' "$state/egress.log" | sed -e 's/^scenario /   /' -e 's/\x1b\[[0-9;]*m//g' | sed -e 's/ scenario=demo$//'
dashboards=""
[ -d dashboards ] && dashboards="  Grafana:      dashboards/ (datasource: ClickHouse at http://127.0.0.1:$ch_http, database egress)"

cat <<MSG

Egress is running. Alerts: exfiltration about 1.5 minutes from now, transit-utilisation and
path-latency about 4 minutes from now (the status page reloads every 30 s).
  status page:  http://127.0.0.1:$api_port/
  alerts:       curl -s http://127.0.0.1:$api_port/api/v1/alerts
  SLA verdicts: curl -s http://127.0.0.1:$api_port/api/v1/slas
  egress paths: curl -s http://127.0.0.1:$api_port/api/v1/paths
  top talkers:  curl -s 'http://127.0.0.1:$api_port/api/v1/top?by=src_host'
  latency:      curl -s 'http://127.0.0.1:$api_port/api/v1/latency?window=900'
  Alertmanager: http://127.0.0.1:$am_port/  (amtool --alertmanager.url=http://127.0.0.1:$am_port alert)
  metrics:      curl -s http://127.0.0.1:$metrics_port/metrics | grep ^egress_
$dashboards
SQL (clickhouse-client --port $ch_tcp, or curl http://127.0.0.1:$ch_http/ --data-binary "..."):
  clickhouse-client --port $ch_tcp -q "SELECT egress_path, round(sum(bytes * sampling_rate) * 8 / 60 / 1e6) AS mbit_s FROM egress.flows WHERE time_received >= now() - 60 AND traffic_direction = 'outbound' GROUP BY egress_path ORDER BY mbit_s DESC"
  clickhouse-client --port $ch_tcp -q "SELECT time, sla, subject, verdict, round(value, 2) AS value, threshold FROM egress.sla_results WHERE time >= now() - 120 ORDER BY time DESC LIMIT 20"
  clickhouse-client --port $ch_tcp -q "SELECT * FROM egress.flows LIMIT 10 FORMAT Vertical"
  loss/errors:  clickhouse-client --port $ch_tcp -q "SELECT * FROM egress.exporter_stats ORDER BY minute DESC LIMIT 10"
logs: .local/egress.log, .local/demo-net.log, .local/alertmanager.log
stop: deploy/local/run.sh stop
MSG
