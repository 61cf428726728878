#!/bin/sh
# Builds {{name}}.wasm without the reins CLI (`reins plugin build` does the same).
# Needs componentize-py: pip install componentize-py==0.25.1
set -eu
cd "$(dirname "$0")"
componentize-py -d wit -w {{world}} componentize app -p . -o {{name}}.wasm
echo "built {{name}}.wasm"
