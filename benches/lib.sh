#!/usr/bin/env bash
# Shared helpers for benchmark scripts: every benchmark prints one line per comparison,
#   RATIO <name>: cfy-init <ours><unit> vs <peer> <theirs><unit> = <ratio>x (goal <goal>)
# where ratio is always ours / theirs; the goal says which side of 1 is good
set -euo pipefail
BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The release artifact: scripts/build-release.sh's static binary (what the images ship).
CFY_INIT="${CFY_INIT:-$BENCH_ROOT/target/x86_64-unknown-linux-gnu/release/cfy-init}"

# ratio NAME OURS PEER_NAME THEIRS UNIT GOAL
ratio() {
  local name=$1 ours=$2 peer=$3 theirs=$4 unit=$5 goal=$6
  python3 - "$name" "$ours" "$peer" "$theirs" "$unit" "$goal" <<'PY'
import sys
name, ours, peer, theirs, unit, goal = sys.argv[1:]
o, t = float(ours), float(theirs)
r = o / t if t else float("inf")
print(f"RATIO {name}: cfy-init {o:.4g}{unit} vs {peer} {t:.4g}{unit} = {r:.3f}x (goal {goal})")
PY
}

# build_release: make sure the release binary exists and is current.
build_release() {
  "$BENCH_ROOT/scripts/build-release.sh" >/dev/null
}
