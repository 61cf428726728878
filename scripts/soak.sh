#!/usr/bin/env bash
# Soak (issue 24): `reins serve` under a steady load for SOAK_MINUTES
# (default 30), on the scripted model and a SQLite state file, with its
# JSON Schema checked on every answer. wrk holds RATE requests a
# second (default 200) over CONNECTIONS connections (default 4), each
# waiting CONNECTIONS*1000/RATE ms between requests. Every 10 s the server's RSS and the state file's size (with its
# WAL) are written to OUT/soak.csv; scripts/plot-soak.py draws them
# (OUT/soak.png). The state's retention settings are printed with the result.
# Usage: scripts/soak.sh [OUT]   (default OUT: target/soak)
# Environment: SOAK_MINUTES, RATE, CONNECTIONS, PORT (default 18490), REINS
# (binary), KEEP_STEPS_S (finished runs keep their steps this long, then
# are compacted; default: the store's default, 600).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/soak}
minutes=${SOAK_MINUTES:-30}
rate=${RATE:-200}
connections=${CONNECTIONS:-4}
port=${PORT:-18490}
reins=${REINS:-target/release/reins}
[ -x "$reins" ] || cargo build --release -p reins
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
mkdir -p "$out"
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/reins.toml" <<TOML
plugins_dir = "."

[providers.up]
kind = "scripted"
responses = ['{"answer": "The clause caps liability at the fees paid.", "risk": "low"}']

[pipelines.soak]
model = "up"
schema = { type = "object", required = ["answer", "risk"], properties = { answer = { type = "string" }, risk = { enum = ["low", "medium", "high"] } } }

[state]
kind = "sqlite"
path = "state.db"
${KEEP_STEPS_S:+keep_steps_s = $KEEP_STEPS_S}
TOML
"$reins" serve --config "$work/reins.toml" --listen "127.0.0.1:$port" > "$work/serve.out" 2> "$work/serve.log" &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "soak", "messages": [{"role": "user", "content": "What does the liability clause say? Section 9.2: the total liability of either party is capped at the fees paid in the twelve months before the claim."}]}'
function delay() return math.floor($connections * 1000 / $rate) end
LUA
seconds=$((minutes * 60))
wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/v1/chat/completions" > "$out/wrk.txt" &
wrk_pid=$!
echo "seconds,rss_kb,state_bytes" > "$out/soak.csv"
start=$(date +%s)
while kill -0 "$wrk_pid" 2>/dev/null; do
  now=$(( $(date +%s) - start ))
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")
  state=$(cat "$work"/state.db* 2>/dev/null | wc -c)
  echo "$now,$rss,$state" >> "$out/soak.csv"
  sleep 10
done
wait "$wrk_pid" || true
cat "$out/wrk.txt"
"$reins" --version 2>/dev/null || true
echo "retention: $(grep -E 'retention|recent_runs|keep_steps' "$work/reins.toml" || echo 'defaults ([state] retention_days = 30, keep_steps_s = 600, recent_runs = 1000, recent_runs_bytes = 64 MiB)')"
tail -n 3 "$out/soak.csv"
python3 scripts/plot-soak.py "$out/soak.csv" "$out/soak.png"
echo "plot: $out/soak.png"
