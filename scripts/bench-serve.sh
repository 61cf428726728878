#!/usr/bin/env bash
# The serving benchmark (issue 14): `reins serve` on loopback with the
# contract-risks example's `contract-risks-fix` pipeline (a normalizer, the
# JSON Schema, two validators, the scripted model), driven by wrk at 1, 16
# and 64 connections. For every case it prints req/s, p50, p99 and p99.9,
# next to the same server's `GET /healthz` at 16 connections in the same
# run (the HTTP floor) and the ratio between them.
# Cases: the store (memory, sqlite, and postgres when REINS_TEST_PG_URL is
# set, e.g. after `. scripts/pg-test.sh`), the plugins' isolation (per-call,
# pooled) and the user message (short, 1.5 KB).
# Usage: scripts/bench-serve.sh   (DURATION s per measurement, default 10;
# STORES, ISOLATIONS, MESSAGES, CONNECTIONS narrow the cases, e.g. STORES=sqlite)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/contract-risks.sh
duration=${DURATION:-10}
stores=${STORES:-memory sqlite${REINS_TEST_PG_URL:+ postgres}}
isolations=${ISOLATIONS:-per-call pooled}
messages=${MESSAGES:-short long}
connections=${CONNECTIONS:-1 16 64}
port=${PORT:-18500}
reins=${REINS:-target/release/reins}
[ -x "$reins" ] || cargo build --release -p reins
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[ -f target/plugins/ranges.wasm ] || bash scripts/build-plugins.sh >/dev/null

work=$(mktemp -d)
server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=; fi
}
trap 'stop_server; rm -rf "$work"' EXIT

short="Review this contract for risks."
long=$(python3 -c "print(('Section 9.2: the total liability of either party under this agreement is capped at the fees paid in the twelve months before the claim. ' * 11)[:1500])")

# wrk's report, as one table row: req/s, p50, p99, p99.9 (ms).
cat > "$work/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local ms = function(us) return string.format("%.2f", us / 1000) end
  io.write(string.format("ROW %.0f %s %s %s %d\n", summary.requests / (summary.duration / 1e6),
    ms(latency:percentile(50)), ms(latency:percentile(99)), ms(latency:percentile(99.9)),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
LUA

measure() { # url connections [post-body-file]
  local script="$work/report.lua"
  if [ -n "${3:-}" ]; then
    { echo 'wrk.method = "POST"'; echo 'wrk.headers["Content-Type"] = "application/json"';
      echo "wrk.body = io.open(\"$3\"):read(\"*a\")"; cat "$work/report.lua"; } > "$work/post.lua"
    script="$work/post.lua"
  fi
  wrk -t1 -c"$2" -d"${duration}s" --timeout 10s -s "$script" "$1" | awk '/^ROW/ {print $2, $3, $4, $5, $6}'
}

echo "| store | isolation | message | connections | req/s | p50 ms | p99 ms | p99.9 ms | errors | /healthz req/s (floor) | share of the floor |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for store in $stores; do
  for isolation in $isolations; do
    contract_risks_copy "$work" "$isolation"
    case $store in
      memory) printf '\n[state]\nkind = "memory"\n' >> "$work/ex/reins.toml" ;;
      sqlite) printf '\n[state]\nkind = "sqlite"\npath = "state.db"\n' >> "$work/ex/reins.toml" ;;
      postgres) printf '\n[state]\nkind = "postgres"\nurl_env = "REINS_TEST_PG_URL"\n' >> "$work/ex/reins.toml" ;;
    esac
    stop_server
    "$reins" serve --config "$work/ex/reins.toml" --listen "127.0.0.1:$port" > "$work/serve.out" 2> "$work/serve.log" &
    server_pid=$!
    for _ in $(seq 300); do grep -q "listening on" "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
    grep -q "listening on" "$work/serve.out" || { cat "$work/serve.log"; exit 1; }
    floor=$(measure "http://127.0.0.1:$port/healthz" 16 | awk '{print $1}')
    for message in $messages; do
      text=$short; [ "$message" = long ] && text=$long
      python3 -c 'import json,sys; print(json.dumps({"model": "contract-risks-fix", "messages": [{"role": "user", "content": sys.argv[1]}]}))' "$text" > "$work/body.json"
      # Warm-up (first-use tables, plugin instances, the store's caches), not reported.
      (duration=2; measure "http://127.0.0.1:$port/v1/chat/completions" 4 "$work/body.json" > /dev/null)
      for c in $connections; do
        read -r rps p50 p99 p999 errors < <(measure "http://127.0.0.1:$port/v1/chat/completions" "$c" "$work/body.json")
        share=$(awk -v a="$rps" -v b="$floor" 'BEGIN { printf "%.1f %%", 100 * a / b }')
        echo "| $store | $isolation | $message | $c | $rps | $p50 | $p99 | $p999 | $errors | $floor | $share |"
      done
    done
  done
done
