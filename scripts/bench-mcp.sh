#!/usr/bin/env bash
# The MCP gateway's cost: a gated `tools/call` through `reins serve`
# (tool-manifest, tool-rules and spend-limit gates, normalize-text on the
# result, the action log on SQLite) against the same call straight to the
# upstream (tests/mcp/upstream.py over Streamable HTTP), in one run, with
# the official Python MCP client (tests/mcp/bench.py). Prints its JSON.
#
#   bash scripts/bench-mcp.sh [--calls 500] [--clients 16] [--seconds 10]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/mcp-deps.sh
[ -f target/plugins/tool-rules.wasm ] || bash scripts/build-plugins.sh
cargo build --release -p reins -q
work=$(mktemp -d)
python3 tests/mcp/upstream.py --transport http --port 0 > "$work/up.out" 2>/dev/null & up=$!
trap 'kill $up ${serve:-} 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q READY "$work/up.out" 2>/dev/null && break; sleep 0.1; done
port=$(awk '/READY/ {print $2}' "$work/up.out")
plugins=$(cd target/plugins && pwd)
cat > "$work/reins.toml" <<TOML
plugins_dir = "$plugins"
[server]
listen = "127.0.0.1:0"
[mcp.servers.up]
url = "http://127.0.0.1:$port/mcp"
[providers.none]
kind = "scripted"
responses = ["{}"]
[pipelines.tools]
model = "none"
mcp_servers = ["up"]
normalizers = [{ plugin = "normalize-text", config = { roles = ["*"] } }]
constraints = { plugin = "tool-manifest", config = { upstream = "all", default_access = "read" } }
gates = [
  { plugin = "tool-rules", config = { rules = [{ tools = ["up__crash"], decision = "deny" }] } },
  { plugin = "spend-limit", config = { tools = ["up__charge"] } },
]
TOML
target/release/reins serve --config "$work/reins.toml" > "$work/serve.out" & serve=$!
for _ in $(seq 300); do grep -q "listening on" "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
base=$(sed -n 's/^listening on //p' "$work/serve.out" | head -1)
python3 tests/mcp/bench.py --direct "http://127.0.0.1:$port/mcp" --gateway "$base/mcp/tools" "$@"
