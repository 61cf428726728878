#!/usr/bin/env bash
# Where a served request's time goes: `perf` records nothing on our machines,
# so `reins serve` samples itself (the `profile` feature: pprof's SIGPROF
# sampler at 997 Hz) while wrk drives the contract-risks example's
# `contract-risks-fix` pipeline, then prints the functions with the largest
# share of the samples, inclusive and self.
# Usage: scripts/profile-serve.sh [STORE] [ISOLATION] [CONNECTIONS]
#   STORE memory|sqlite (default sqlite), ISOLATION per-call|pooled (default
#   pooled), CONNECTIONS (default 16); DURATION s (default 10); TOP rows (default 60).
# The folded stacks stay in target/profile-serve.folded (flamegraph.pl reads them).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/contract-risks.sh
store=${1:-sqlite}; isolation=${2:-pooled}; connections=${3:-16}
duration=${DURATION:-10}; port=${PORT:-18600}
cargo build --release -p reins --features profile
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[ -f target/plugins/ranges.wasm ] || bash scripts/build-plugins.sh >/dev/null
work=$(mktemp -d); pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
contract_risks_copy "$work" "$isolation"
case $store in
  memory) printf '\n[state]\nkind = "memory"\n' >> "$work/ex/reins.toml" ;;
  sqlite) printf '\n[state]\nkind = "sqlite"\npath = "state.db"\n' >> "$work/ex/reins.toml" ;;
  *) echo "STORE is memory or sqlite, not $store" >&2; exit 2 ;;
esac
out=$(pwd)/target/profile-serve.folded
REINS_PROFILE=$out target/release/reins serve --config "$work/ex/reins.toml" --listen "127.0.0.1:$port" > "$work/out" 2> "$work/log" &
pid=$!
for _ in $(seq 300); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done
grep -q "listening on" "$work/out" || { cat "$work/log"; exit 1; }
python3 -c 'import json; print(json.dumps({"model": "contract-risks-fix", "messages": [{"role": "user", "content": "Review this contract for risks."}]}))' > "$work/body.json"
printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = io.open("%s"):read("*a")\n' "$work/body.json" > "$work/post.lua"
wrk -t1 -c"$connections" -d"${duration}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/v1/chat/completions" | grep -E "Requests/sec|  50%|  99%"
kill -INT "$pid"; wait "$pid" || true; pid=
python3 scripts/profile-top.py "$out" "${TOP:-60}"
