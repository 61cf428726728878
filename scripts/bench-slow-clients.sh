#!/usr/bin/env bash
# Slow clients against `reins serve` (issue 24): the server runs under
# `ulimit -n 2048`; 3,000 connections trickle a request head one header line
# a second from 127.0.0.2 onwards while /healthz is probed from 127.0.0.1
# (scripts/slow-clients.py). Three runs, one server each:
#   baseline  the limits out of the way (caps far above the file limit,
#             timeouts of an hour): how the server fared before issue 24
#   spread    the defaults, attackers on 19 addresses: the total cap and the
#             head timeout do the work (158 per address, under the per-address cap)
#   one-ip    the defaults, every attacker on 127.0.0.2: the per-address cap
# Usage: scripts/bench-slow-clients.sh [runs...]   (default: all three)
# Environment: REINS (binary, default target/release/reins), DURATION (s of
# probing, default 60), CONNECTIONS (default 3000), PORT (default 18480).
set -euo pipefail
cd "$(dirname "$0")/.."
reins=${REINS:-target/release/reins}
duration=${DURATION:-60}
connections=${CONNECTIONS:-3000}
port=${PORT:-18480}
[ -x "$reins" ] || cargo build --release -p reins

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

run() {
  local name=$1 sources=$2 server_keys=$3
  cat > "$work/reins.toml" <<EOF
plugins_dir = "."

[providers.up]
kind = "scripted"
responses = ["hello"]

[pipelines.echo]
model = "up"

[server]
$server_keys
EOF
  echo "== $name: $connections slow-header connections from $sources address(es), ulimit -n 2048 =="
  [ -n "$server_keys" ] && echo "   [server] ${server_keys//$'\n'/, }"
  (ulimit -n 2048 && exec "$reins" serve --config "$work/reins.toml" --listen "127.0.0.1:$port") \
    > "$work/out.log" 2> "$work/err.log" &
  server_pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$work/out.log" 2>/dev/null && break; sleep 0.1; done
  python3 scripts/slow-clients.py --port "$port" --connections "$connections" --sources "$sources" --duration "$duration"
  curl -s "http://127.0.0.1:$port/metrics" | grep -E '^reins_(connections|accept)_' | sed 's/^/   /' || true
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
  echo
}

runs=${*:-baseline spread one-ip}
for r in $runs; do
  case $r in
    baseline) run baseline 19 $'header_read_timeout_ms = 3600000\nbody_read_timeout_ms = 3600000\nidle_timeout_ms = 3600000\nmax_connections = 1000000\nmax_connections_per_ip = 1000000' ;;
    spread) run spread 19 "" ;;
    one-ip) run one-ip 1 "" ;;
    *) echo "unknown run $r (baseline, spread, one-ip)" >&2; exit 2 ;;
  esac
done
