#!/usr/bin/env bash
# What the MCP gateway tests run: the reference MCP servers from npm
# (tests/mcp/package-lock.json, into tests/mcp/node_modules) and the official
# Python `mcp` SDK (tests/mcp/upstream.py, client.py). Installs only; nothing
# is downloaded while the tests run. A quick no-op when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f tests/mcp/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js ] \
  || [ ! -f tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js ] \
  || [ tests/mcp/package-lock.json -nt tests/mcp/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/mcp --no-audit --no-fund --loglevel=error
fi
# Pinned in tests/clients/requirements.txt (which scripts/test.sh installs too);
# repeated here so this script alone readies the MCP fixtures.
mcp_pin=$(grep -E '^mcp==' tests/clients/requirements.txt)
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$mcp_pin"
