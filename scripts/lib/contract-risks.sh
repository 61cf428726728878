# Sourced by the serving benchmark and profile: a copy of the contract-risks
# example in $1/ex whose plugins (the built ones, with their sidecars) are in
# $1/plugins, each in isolation $2 (per-call or pooled).
contract_risks_copy() {
  local work=$1 isolation=$2 f p
  rm -rf "$work/ex" "$work/plugins" && cp -r examples/contract-risks "$work/ex" && mkdir "$work/plugins"
  for p in normalize-text coerce-numbers ranges; do cp "target/plugins/$p".{wasm,toml} "$work/plugins/"; done
  sed -i "s|^plugins_dir = .*|plugins_dir = \"$work/plugins\"|" "$work/ex/reins.toml"
  for f in "$work"/plugins/*.toml; do
    sed -i "s/^isolation = .*/isolation = \"$isolation\"/" "$f"
    grep -q '^isolation' "$f" || printf 'isolation = "%s"\n%s\n' "$isolation" "$(cat "$f")" > "$f"
  done
}
