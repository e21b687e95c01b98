#!/usr/bin/env bash
# Generates helm/cfy-manager/values.schema.json: the chart's own values (helm/schema/values.base.json,
# edited by hand) with `config:` validated by cfy-init's own schema (`cfy-init config schema`:
# every section and field, unknown keys refused), so that a value cfy-init would refuse at boot
# is refused by `helm install` / `helm template` instead. tests/helm_chart.rs checks that the
# committed file is what this script prints.
#
#   scripts/gen-values-schema.sh            rewrite helm/cfy-manager/values.schema.json
#   scripts/gen-values-schema.sh --stdout   print it instead
# Env: CFY_INIT_BIN (default: build and use target/debug/cfy-init)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${CFY_INIT_BIN:-} ]]; then
  cargo build -q --bin cfy-init >&2
  CFY_INIT_BIN=${CARGO_TARGET_DIR:-target}/debug/cfy-init
fi
schema=$(mktemp)
trap 'rm -f "$schema"' EXIT
"$CFY_INIT_BIN" config schema >"$schema"

render() {
  python3 - helm/schema/values.base.json "$schema" <<'PY'
import json, sys

base = json.load(open(sys.argv[1]))
cfg = json.load(open(sys.argv[2]))

def strip(node):
    """Drop `default` (informational, and long) and keep everything that validates."""
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node

cfg = strip(cfg)
config = base["properties"]["config"]
config.update({
    "type": "object",
    "properties": cfg["properties"],
    "additionalProperties": cfg.get("additionalProperties", False),
})
# cfy-init's $refs point at #/definitions/<Name>: keep them at the document's root.
defs = cfg.get("definitions", {})
clash = set(defs) & set(base.get("definitions", {}))
if clash:
    sys.exit(f"gen-values-schema: definitions in both schemas: {sorted(clash)}")
base["definitions"] = dict(base.get("definitions", {}), **defs)
print(json.dumps(base, indent=2))
PY
}

if [[ ${1:-} == --stdout ]]; then
  render
else
  out=helm/cfy-manager/values.schema.json
  render >"$out.tmp" && mv "$out.tmp" "$out"
  echo "wrote $out" >&2
fi
