#!/bin/sh
# A local ClickHouse for running Egress by hand: loopback only, everything under <dir>.
#
#   deploy/local/clickhouse.sh start  <dir> [http_port] [tcp_port]   (defaults 8123 9000)
#   deploy/local/clickhouse.sh stop   <dir>
#   deploy/local/clickhouse.sh status <dir>
#
# Uses the same configuration templates as the test kit (deploy/clickhouse/config.xml and
# users.xml): a `default` user without a password, reachable from 127.0.0.1 only. `start` runs
# the server in the background, writes <dir>/clickhouse.pid and waits (up to 60 s) until
# GET /ping answers. The binary is $CLICKHOUSE_SERVER, else clickhouse-server, else
# `clickhouse server`.
set -eu

usage() { echo "usage: $0 start|stop|status <dir> [http_port] [tcp_port]" >&2; exit 2; }
[ $# -ge 2 ] || usage
command=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
http_port=${3:-8123}
tcp_port=${4:-9000}
templates=$(cd "$(dirname "$0")/../clickhouse" && pwd)
pid_file=$dir/clickhouse.pid

running() { [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }
port_of() { sed -n 's:.*<http_port>\([0-9]*\)</http_port>.*:\1:p' "$dir/config.xml"; }
ping() { curl -fsS "http://127.0.0.1:$1/ping" 2>/dev/null | grep -q '^Ok'; }

case $command in
start)
    if running; then echo "already running (pid $(cat "$pid_file"), http port $(port_of))"; exit 0; fi
    mkdir -p "$dir/log" "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
    sed -e "s#@DIR@#$dir#g" -e "s#@HTTP_PORT@#$http_port#g" -e "s#@TCP_PORT@#$tcp_port#g" \
        "$templates/config.xml" > "$dir/config.xml"
    cp "$templates/users.xml" "$dir/users.xml"
    if [ -n "${CLICKHOUSE_SERVER:-}" ]; then set -- "$CLICKHOUSE_SERVER"
    elif command -v clickhouse-server >/dev/null 2>&1; then set -- clickhouse-server
    elif [ -x /usr/sbin/clickhouse-server ]; then set -- /usr/sbin/clickhouse-server
    else set -- clickhouse server
    fi
    (cd "$dir" && nohup "$@" --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 &
     echo $! > "$pid_file")
    for _ in $(seq 600); do
        if ping "$http_port"; then
            echo "ClickHouse running: http://127.0.0.1:$http_port (pid $(cat "$pid_file"), data in $dir)"
            exit 0
        fi
        running || break
        sleep 0.1
    done
    echo "ClickHouse did not start; last log lines:" >&2
    tail -n 30 "$dir/log/clickhouse-server.err.log" "$dir/log/stdout.log" >&2 2>/dev/null || true
    exit 1
    ;;
stop)
    if ! running; then echo "not running"; rm -f "$pid_file"; exit 0; fi
    pid=$(cat "$pid_file")
    kill -TERM "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || { rm -f "$pid_file"; echo "stopped"; exit 0; }; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pid_file"
    echo "killed after 30 s"
    ;;
status)
    if running && ping "$(port_of)"; then
        echo "running: http://127.0.0.1:$(port_of) (pid $(cat "$pid_file"))"
    elif running; then
        echo "process $(cat "$pid_file") alive but not answering /ping"; exit 1
    else
        echo "not running"; exit 3
    fi
    ;;
*) usage ;;
esac
