#!/usr/bin/env bash
# The MCP gateway, end to end and offline: the reference filesystem MCP
# server behind `reins serve`, driven by the official Python MCP client.
# The agent lists its tools, reads a file, asks to write one (escalated: a
# reviewer approves it through the approvals API while the call waits) and
# to move one (denied by the gate).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
cd "$root"
bash scripts/mcp-deps.sh
[ -f target/plugins/tool-rules.wasm ] || bash scripts/build-plugins.sh
cargo build --release -p reins -q
export MCP_DEMO_AGENT_TOKEN=mcp-demo-agent MCP_DEMO_REVIEWER_TOKEN=mcp-demo-reviewer
rm -f "$here/workspace/approved.txt" "$here"/reins-state.db*
target/release/reins serve --config "$here/reins.toml" >/dev/null & serve=$!
trap 'kill $serve 2>/dev/null || true' EXIT
api=http://127.0.0.1:8790
# The first start compiles and sets up the plugins (cached afterwards).
for _ in $(seq 1200); do curl -sf "$api/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "$api/readyz" >/dev/null || { echo "reins serve did not become ready" >&2; exit 1; }

# The reviewer: approves the first pending approval it sees.
(
  for _ in $(seq 300); do
    id=$(curl -sf -H "authorization: Bearer $MCP_DEMO_REVIEWER_TOKEN" "$api/v1/approvals?status=pending" \
      | python3 -c 'import json,sys; a=json.load(sys.stdin)["data"]; print(a[0]["id"] if a else "")' 2>/dev/null || true)
    if [ -n "$id" ]; then
      echo "reviewer: approving $id" >&2
      curl -sf -H "authorization: Bearer $MCP_DEMO_REVIEWER_TOKEN" -H 'content-type: application/json' \
        -d '{"decision": "approve", "comment": "looks fine"}' "$api/v1/approvals/$id" >/dev/null
      exit 0
    fi
    sleep 0.2
  done
) & reviewer=$!

python3 tests/mcp/client.py --url "$api/mcp/files" --header "Authorization: Bearer $MCP_DEMO_AGENT_TOKEN" > "$here/.result.json" <<'STEPS'
[
  {"op": "list_tools"},
  {"op": "call", "name": "fs__read_text_file", "arguments": {"path": "notes.txt"}},
  {"op": "call", "name": "fs__write_file", "arguments": {"path": "approved.txt", "content": "written after a human said yes\n"}},
  {"op": "call", "name": "fs__move_file", "arguments": {"source": "notes.txt", "destination": "moved.txt"}}
]
STEPS
wait $reviewer || true
python3 - "$here/.result.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
r = doc["results"]
tools = [t["name"] for t in r[0]["tools"]]
print(f"tools offered ({len(tools)}):", ", ".join(tools))
def show(label, res):
    print(f"{label}: {'ERROR ' if res.get('is_error') else ''}{' '.join(res.get('text') or [])}")
show("read notes.txt", r[1])
show("write approved.txt (escalated, approved)", r[2])
show("move notes.txt (denied)", r[3])
assert "fs__move_file" in tools and "fs__read_media_file" not in tools
assert not r[1]["is_error"] and "Quarterly notes" in " ".join(r[1]["text"])
assert not r[2]["is_error"], r[2]
assert r[3]["is_error"] and "not allowed" in " ".join(r[3]["text"]), r[3]
PY
rm -f "$here/.result.json"
test -f "$here/workspace/approved.txt"
test -f "$here/workspace/notes.txt"
echo "mcp-gateway: ok"
