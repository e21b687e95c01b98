#!/usr/bin/env bash
# Builds cfy-init and runs its main job on the embedded default config, as PID 1 in a
# throwaway sandbox: a new PID and mount namespace, a Cloudify-shaped image tree under a
# temp root, an empty volume at <root>/cfy-persist and credentials at <root>/secret.
# Shows the seeded, linked result and the status, then stops it with SIGTERM. Needs root
# (for unshare), like the container it stands for.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --bin cfy-init
BIN="$PWD/target/debug/cfy-init"
SANDBOX="$(mktemp -d /tmp/cfy-init-demo.XXXXXX)"
ROOT="$SANDBOX/root"
trap 'rm -rf "$SANDBOX"' EXIT

echo "== laying out a Cloudify-shaped image tree in $ROOT"
bash scripts/demo-tree.sh "$ROOT"

echo "== starting cfy-init as PID 1 (unshare --pid --fork --mount-proc)"
unshare --pid --fork --mount-proc --mount "$BIN" --root "$ROOT" run \
  >"$SANDBOX/init.log" 2>&1 &
INIT=$!

for _ in $(seq 1 150); do
  "$BIN" --root "$ROOT" ready >/dev/null 2>&1 && break
  kill -0 "$INIT" 2>/dev/null || break
  sleep 0.2
done

echo "== the init's log"
cat "$SANDBOX/init.log"
echo "== directories now linked into the store"
for d in var/lib etc/cloudify opt/manager opt/mgmtworker; do
  printf '  /%-16s -> %s\n' "$d" "$(readlink "$ROOT/$d")"
done
echo "== store contents"
ls -la "$ROOT/cfy-persist"
echo "== cfy-init status"
"$BIN" --root "$ROOT" status || true

echo "== SIGTERM to cfy-init (graceful shutdown)"
# `unshare --fork` ignores SIGTERM itself, so signal the namespace's PID 1 (its child), as
# `docker stop` signals the container's PID 1.
kill -TERM "$(pgrep -P "$INIT")"
status=0
wait "$INIT" || status=$?
echo "cfy-init exited $status"
tail -n 5 "$SANDBOX/init.log"
