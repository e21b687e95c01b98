#!/usr/bin/env bash
# Regenerates linker/startup.order, the functions placed first in the release binary (see
# build.rs): builds the static release binary, runs it under linker/bptrace (a breakpoint on
# every function entry, each removed when first hit) in the start-up scenarios of
# benches/pid1.sh and benches/supervisord.sh (`run -- /bin/true`, 10 idle services,
# supervisord mode with 13 programs and one `supervisorctl status`), and lists the functions
# hit, in order. Run it after changes to start-up code or dependencies, then rebuild.
# Needs gcc, nm, unshare (root) and, for the status call, supervisorctl.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
# CFY_INIT_BIN: an already built static release binary (skips the build).
BIN=${CFY_INIT_BIN:-$("$REPO/scripts/build-release.sh")/cfy-init}
work=$(mktemp -d /tmp/cfy-order.XXXXXX)
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/bptrace" "$REPO/linker/bptrace.c"
nm --defined-only "$BIN" | awk '$2 ~ /^[tTwWiI]$/ {print $1}' | sort -u >"$work/entries"

# trace NAME SECONDS ARGS...: the init as PID 1 of its own PID namespace, so that everything
# it started dies with the tracer.
trace() {
  local name=$1 secs=$2; shift 2
  CFY_INIT_LOG=warn unshare --pid --fork --mount-proc \
    "$work/bptrace" "$work/entries" "$secs" "$work/$name.hits" -- "$BIN" "$@" >/dev/null 2>&1 || true
  [[ -s $work/$name.hits ]] || { echo "gen-startup-order: no functions hit in $name" >&2; exit 1; }
}

mkdir -p "$work/true"
trace true 20 --root "$work/true" run -- /bin/true

mkdir -p "$work/ten"
{ echo "supervise:"; echo "  services:"
  for i in $(seq 0 9); do echo "    - {name: s$i, command: [sleep, '1000'], startsecs: 0s}"; done
} >"$work/ten.yaml"
trace ten 3 --root "$work/ten" --config "$work/ten.yaml" run

root=$work/svd
mkdir -p "$root/etc" "$root/tmp" "$root/var"
{ printf '[supervisord]\nlogfile=/var/supervisord.log\npidfile=/var/supervisord.pid\nchildlogdir=/var\n\n'
  printf '[unix_http_server]\nfile=/tmp/supervisor.sock\nchmod=0770\n\n'
  printf '[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n'
  printf '[program:cloudify-starter]\ncommand=/bin/sh -c "echo configured"\nstartsecs=0\nautorestart=false\n\n'
  # Options as Cloudify's own program files use them (environment, log files, rotation).
  for i in $(seq 1 12); do
    printf '[program:svc%s]\ncommand=sleep 1000\nuser=root\nstartsecs=0\nautorestart=true\n' "$i"
    printf 'environment=HOME="/root",MANAGER_NAME="svc%s"\nredirect_stderr=true\nstdout_logfile_maxbytes=5MB\nstdout_logfile_backups=1\n\n' "$i"
  done
} >"$root/etc/supervisord.conf"
printf 'supervisord:\n  enabled: true\n' >"$work/svd.yaml"
if command -v supervisorctl >/dev/null; then
  (sleep 2; supervisorctl -s "unix://$root/tmp/supervisor.sock" status >/dev/null 2>&1 || true) &
fi
trace svd 4 --root "$root" --config "$work/svd.yaml" run
wait

# Entry addresses to symbol names (all aliases), first hit first, each once.
nm --defined-only "$BIN" | awk '$2 ~ /^[tTwWiI]$/ {print $1, $3}' >"$work/names"
awk 'FNR == NR { names[$1] = names[$1] $2 "\n"; next }
     !seen[$1]++ { key = sprintf("%016s", $1); gsub(/ /, "0", key); printf "%s", names[key] }' \
  "$work/names" "$work/true.hits" "$work/ten.hits" "$work/svd.hits" >"$REPO/linker/startup.order"
echo "gen-startup-order: $(wc -l <"$REPO/linker/startup.order") symbols in linker/startup.order" >&2
