#!/usr/bin/env bash
# The quick start's main job, offline: build the host and the bundled plugins,
# run every plugin's case file through the real host, then run the
# contract-risk example (scripted model, one repair) and print the validated
# JSON and the trace.
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
if [ -f examples/contract-risks/reins.toml ]; then
  echo "== reins run: contract-risks (one repair) =="
  "$reins" run --config examples/contract-risks/reins.toml --pipeline contract-risks \
    --input examples/contract-risks/contract.md --trace human || status=1
fi
exit $status
