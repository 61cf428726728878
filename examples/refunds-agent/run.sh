#!/usr/bin/env bash
# The refunds agent, end to end and offline: a payments sink, `reins serve`,
# three refunds (one allowed, one escalated and approved, one over the daily
# budget) and one SQL request that sql-guard sends back for repair.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
cd "$root"
[ -f target/plugins/spend-limit.wasm ] || bash scripts/build-plugins.sh
cargo build --release -p reins -q
python3 "$here/sink.py" 8787 & sink=$!
target/release/reins serve --config "$here/reins.toml" >/dev/null & serve=$!
trap 'kill $serve $sink 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:8788/readyz >/dev/null && break; sleep 0.1; done

api=http://127.0.0.1:8788
# Credentials, not body metadata, say who calls (see reins.toml).
support=(-H "authorization: Bearer refunds-demo-acme-support")
approver=(-H "authorization: Bearer refunds-demo-acme-approver")
analyst=(-H "authorization: Bearer refunds-demo-acme-analyst")
# A JWT for globex's support agent, signed with the example issuer's key
# (what an identity provider would hand out): EdDSA over header.payload.
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
header=$(printf '{"alg":"EdDSA","typ":"JWT","kid":"refunds-example-1"}' | b64url)
payload=$(printf '{"iss":"https://id.refunds.example","aud":"reins","sub":"globex-agent-7","org_id":"globex","roles":["support"],"iat":%d,"exp":%d}' "$now" $((now + 600)) | b64url)
signing_input=$(mktemp)
printf '%s.%s' "$header" "$payload" > "$signing_input"
sig=$(openssl pkeyutl -sign -rawin -inkey "$here/keys/issuer-ed25519.pem" -in "$signing_input" | b64url)
rm -f "$signing_input"
globex=(-H "authorization: Bearer $header.$payload.$sig")
show() { python3 -c 'import json,sys; r=json.load(sys.stdin); print("  status:", r.get("status"), "| executions:", [(e["tool"], e["status"]) for e in r.get("executions", [])], "| approvals:", r.get("approvals", []), "| error:", (r.get("error") or "")[:120] if isinstance(r.get("error"), str) else r.get("error"))'; }

echo "== 1. refund \$40 (under \$100): allowed, sent to the sink"
curl -s "$api/v1/pipelines/refunds/runs" "${support[@]}" -H 'content-type: application/json' \
  -d '{"input": "Please refund ORD-1001, the mug arrived broken."}' | show

echo "== 2. refund \$250 (over \$100): escalated to a human"
run=$(curl -s "$api/v1/pipelines/refunds/runs" "${support[@]}" -H 'content-type: application/json' \
  -d '{"input": "ORD-1002 never arrived, refund it please."}')
echo "$run" | show
id=$(echo "$run" | python3 -c 'import json,sys; print(json.load(sys.stdin)["approvals"][0])')
echo "   pending approvals (also at $api/ui/approvals):"
curl -s "$api/v1/approvals?status=pending" "${approver[@]}" | python3 -c 'import json,sys; [print("  ", a["id"], a["action"]["tool"], a["action"]["arguments"], "-", a["reason"]) for a in json.load(sys.stdin)["data"]]'
echo "   acme's manager approves it:"
curl -s "$api/v1/approvals/$id" "${approver[@]}" -H 'content-type: application/json' -d '{"decision": "approve", "comment": "customer verified"}' \
  | python3 -c 'import json,sys; r=json.load(sys.stdin); print("   approval:", r["approval"]["status"], "| run:", r["run"]["status"], [(e["tool"], e["status"]) for e in r["run"]["executions"]])'

echo "== 3. refund \$90: within the \$100 limit, but \$40 + \$250 + \$90 is over the \$300 daily budget: denied"
curl -s "$api/v1/pipelines/refunds/runs" "${support[@]}" -H 'content-type: application/json' \
  -d '{"input": "Refund ORD-1003 please, wrong size."}' | show

echo "== 3b. the same \$90 from globex (a JWT): its own tenant, its own budget: allowed"
curl -s "$api/v1/pipelines/refunds/runs" "${globex[@]}" -H 'content-type: application/json' \
  -d '{"input": "Refund ORD-2001 please, wrong colour."}' | show

echo "== 3c. claiming another tenant in the body does not escape the budget: 403"
curl -s "$api/v1/pipelines/refunds/runs" "${support[@]}" -H 'content-type: application/json' \
  -d '{"input": "Refund ORD-1003 please, wrong size.", "metadata": {"tenant": "initech"}}' \
  | python3 -c 'import json,sys; print("  ", json.load(sys.stdin)["error"]["message"])'


echo "== 4. reporting: DELETE without WHERE is denied; the model's repaired statement is returned to the caller"
curl -s "$api/v1/pipelines/reporting/runs" "${analyst[@]}" -H 'content-type: application/json' \
  -d '{"input": "clean up the orders table"}' \
  | python3 -c 'import json,sys; r=json.load(sys.stdin); print("  status:", r["status"], "| attempts:", len(r["attempts"]), "| decisions:", [(d["gate"], d["decision"]["kind"]) for d in r["decisions"]], "| returned:", [e["arguments"]["sql"] for e in r.get("executions", [])])'
sleep 0.2
