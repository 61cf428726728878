#!/usr/bin/env bash
# docs-qa: questions about the Tern docs (docs/), answered with citations.
#
#   bash examples/docs-qa/run.sh
#
# Builds the host and the bundled plugins, then asks three questions on the
# scripted model (offline): BM25 retrieval over docs/, the context-budget
# plugin fitting 600 tokens, the citations validator checking every
# [path#n] the answer cites (the second question's first answer cites a
# chunk that is not in the context, and is repaired). Prints each answer
# and the context report: what was retrieved, kept and dropped, and why.
#
# With REINS_DOCS_QA_URL set to an OpenAI-compatible server (e.g. the
# llama.cpp server of scripts/llama-server.sh: REINS_DOCS_QA_URL=$REINS_TEST_LLAMA_URL)
# and REINS_DOCS_QA_MODEL (default: smollm2), the same questions go to that
# model too.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
bash scripts/build-plugins.sh >/dev/null 2>&1
cargo build --release -q -p reins
reins="$root/target/release/reins"
status=0

ask() { # config question-file strict
  echo "== $(cat "$2")"
  local trace
  trace="$(mktemp)"
  # A small local model may fail the citations check: the report says why,
  # and only the scripted runs decide the exit status.
  if REINS_LOG=off "$reins" run --config "$1" --pipeline docs-qa --input "$2" --trace json 2>"$trace"; then :; elif [ "$3" = strict ]; then status=1; fi
  echo
  python3 - "$trace" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
r = json.loads(text[text.index("{"):])
c = r.get("context") or {}
print(f"   status: {r['status']}, attempts: {len(r['attempts'])}, tokenizer: {c.get('tokenizer')}, "
      f"context: {c.get('used_tokens')} of {c.get('budget_tokens')} tokens")
for a in r["attempts"]:
    for v in a.get("violations", []):
        print(f"   attempt {a['attempt']}: {v['source']} {v['code']}: {v['message']}")
print("   kept (in the order the model sees them):", ", ".join(k["id"] for k in c.get("kept", [])))
for k in c.get("kept", []):
    if k.get("reason"):
        print(f"   kept {k['id']}: {k['reason']}")
for d in c.get("dropped", []):
    print(f"   dropped {d['id']}: {d['reason']}")
PY
  rm -f "$trace"
  echo
}

for q in argon2 retention rate-limit; do
  ask "$here/reins.toml" "$here/$q.txt" strict
done

if [ -n "${REINS_DOCS_QA_URL:-}" ]; then
  local_config="$(mktemp -d)/reins.toml"
  # The same pipeline on the configured model; paths stay relative to this folder.
  sed -e "s#^plugins_dir = .*#plugins_dir = \"$root/target/plugins\"#" \
      -e "s#^path = \"docs/\"#path = \"$here/docs/\"#" \
      -e "s#^system_prompt_file = \"prompt.md\"#system_prompt_file = \"$here/prompt.md\"#" \
      -e "s#^file = \"responses.jsonl\"#file = \"$here/responses.jsonl\"#" \
      "$here/reins.toml" > "$local_config"
  cat >> "$local_config" <<TOML

[providers.local]
kind = "openai"
base_url = "$REINS_DOCS_QA_URL"
model = "${REINS_DOCS_QA_MODEL:-smollm2}"
max_tokens = 120
TOML
  sed -i -e 's/^model = "writer"/model = "local"/' "$local_config"
  echo "== on the model at $REINS_DOCS_QA_URL"
  for q in argon2 retention rate-limit; do
    ask "$local_config" "$here/$q.txt" lenient
  done
fi
exit $status
