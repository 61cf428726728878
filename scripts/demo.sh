#!/usr/bin/env bash
# The quick start's main job, offline: build the host and the bundled plugins,
# run every plugin's case file through the real host, then run the
# contract-risk example (scripted model, one repair) and print the validated
# JSON and the trace, and the support-chat example (a prose answer behind
# output guardrails), and docs-qa (answers with citations from retrieved docs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-plugins.sh
cargo build --release -p reins
reins=target/release/reins
status=0
for dir in plugins/*/; do
  name=$(basename "$dir")
  [ -f "$dir/cases.json" ] || continue
  "$reins" plugin test "target/plugins/$name.wasm" "$dir/cases.json" || status=1
  echo
done
# The examples read target/plugins and set the plugins up in their reins.toml.
echo "== reins run: contract-risks (the schema catches \"\$500,000\", one repair fixes it) =="
"$reins" run --config examples/contract-risks/reins.toml --pipeline contract-risks \
  --input examples/contract-risks/contract.md --trace human || status=1
echo
echo "== reins run: contract-risks-fix (coerce-numbers fixes it, zero repair calls) =="
"$reins" run --config examples/contract-risks/reins.toml --pipeline contract-risks-fix \
  --input examples/contract-risks/contract.md --trace human || status=1
echo
# The prose assistant behind output guardrails (pii, redact-secrets, blocklist, judge).
echo "== reins run: support-chat (personal data and a secret redacted, no model call) =="
"$reins" run --config examples/support-chat/reins.toml --pipeline support \
  --input examples/support-chat/order.txt --trace none || status=1
echo
echo "== reins run: support-chat (the judge fails a competitor's name, one repair) =="
"$reins" run --config examples/support-chat/reins.toml --pipeline support \
  --input examples/support-chat/compare.txt --trace human || status=1
echo
# Questions about a folder of docs: BM25 retrieval, the context budget, citations checked.
echo "== reins run: docs-qa (retrieved context under 600 tokens; a citation outside it is repaired) =="
"$reins" run --config examples/docs-qa/reins.toml --pipeline docs-qa \
  --input examples/docs-qa/retention.txt --trace human || status=1
exit $status
