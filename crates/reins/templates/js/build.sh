#!/bin/sh
# Builds {{name}}.wasm without the reins CLI (`reins plugin build` does the same).
# Needs componentize-js: npm install (package.json lists it).
# `-d http fetch-event` keeps wasi:http out of the component: the Reins host
# offers no HTTP and refuses components that import it.
set -eu
cd "$(dirname "$0")"
[ -x node_modules/.bin/componentize-js ] || npm install --no-audit --no-fund
node_modules/.bin/componentize-js --wit wit --world-name {{world}} -d http fetch-event -o {{name}}.wasm app.js
echo "built {{name}}.wasm"
