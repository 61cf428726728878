#!/usr/bin/env bash
# Builds every bundled plugin for wasm32-wasip2 and lays them out, with their
# sidecars, as a plugins directory: target/plugins/NAME.wasm + NAME.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml
out=target/plugins
mkdir -p "$out"
for dir in plugins/*/; do
  name=$(basename "$dir")
  [ -f "$dir/Cargo.toml" ] || continue
  [ "$name" = testing ] && continue
  # Shared libraries of the plugins (e.g. detect) are no components.
  grep -q 'cdylib' "$dir/Cargo.toml" || continue
  wasm="target/wasm32-wasip2/release/${name//-/_}.wasm"
  [ -f "$wasm" ] || { echo "missing $wasm" >&2; exit 1; }
  cp "$wasm" "$out/$name.wasm"
  [ -f "$dir/$name.toml" ] && cp "$dir/$name.toml" "$out/$name.toml"
done
echo "plugins in $out:" >&2
ls "$out" >&2
