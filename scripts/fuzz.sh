#!/usr/bin/env bash
# Fuzzes cfy-init's parsers of untrusted input with cargo-fuzz (libFuzzer), each target for
# MINUTES (default 10), at most FUZZ_JOBS targets at a time (default 2), niced. Not in CI.
#
#   scripts/fuzz.sh [MINUTES] [TARGET...]     targets: see fuzz/Cargo.toml (default: all)
#
# Needs `cargo install cargo-fuzz`; runs on the stable toolchain with RUSTC_BOOTSTRAP=1 (the
# sanitizer-coverage flags are nightly-only). FUZZ_SANITIZER (default none; `address` finds
# memory errors in C dependencies at ~2x the cost). Corpora, logs and crash artifacts go to
# FUZZ_WORK (default /tmp/cfy-init-fuzz), seeded from the repo's fixtures. The build runs
# under the team's build lock (BUILD_LOCK, default /tmp/cfy-build.lock); the runs do not.
# Prints one line per target: runs, seconds, crashes (artifact files); exits 1 on a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
minutes=${1:-10}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(xmlrpc_request supervisord_ini config_loader archive_verifier)
jobs=${FUZZ_JOBS:-2}
san=${FUZZ_SANITIZER:-none}
work=${FUZZ_WORK:-/tmp/cfy-init-fuzz}
export RUSTC_BOOTSTRAP=1

mkdir -p "$work"
# Debug assertions on: an arithmetic overflow is a finding (the tests run debug builds).
(cd fuzz && flock "${BUILD_LOCK:-/tmp/cfy-build.lock}" cargo fuzz build -s "$san" --debug-assertions)
bin_dir=$repo/fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release

seed() { # target dir
    local t=$1 d=$2
    mkdir -p "$d"
    case $t in
    xmlrpc_request)
        printf "<?xml version='1.0'?>\n<methodCall>\n<methodName>supervisor.getProcessInfo</methodName>\n<params>\n<param>\n<value><string>nginx</string></value>\n</param>\n</params>\n</methodCall>\n" >"$d/get"
        printf "<methodCall><methodName>system.multicall</methodName><params><param><value><array><data><value><struct><member><name>methodName</name><value><string>supervisor.startProcess</string></value></member><member><name>params</name><value><array><data><value>x</value><value><boolean>1</boolean></value><value><int>-3</int></value><value><double>1.5</double></value><value><base64>eA==</base64></value><value><nil/></value><value><dateTime.iso8601>20260101T00:00:00</dateTime.iso8601></value></data></array></value></member></struct></value></data></array></value></param></params></methodCall>" >"$d/multicall"
        ;;
    supervisord_ini) cp "$repo"/tests/fixtures/supervisord-*/*.conf "$d/" ;;
    config_loader) cp "$repo"/src/defaults/*.yaml "$d/" ;;
    archive_verifier)
        local tmp
        tmp=$(mktemp -d)
        mkdir -p "$tmp/store/a" && echo hello >"$tmp/store/a/f" && ln -s f "$tmp/store/a/l"
        { printf '\0'; tar -C "$tmp" -cf - store; } >"$d/tar"
        tar -C "$tmp" -cf - store | zstd -q -c >"$d/zst" 2>/dev/null || true
        rm -rf "$tmp"
        ;;
    esac
}

run() { # target
    local t=$1 corpus=$work/corpus/$1 art=$work/artifacts/$1/ log=$work/$1.log
    [ -d "$corpus" ] || seed "$t" "$corpus"
    mkdir -p "$art"
    nice -n 19 "$bin_dir/$t" "$corpus" -max_total_time=$((minutes * 60)) -timeout=20 \
        -rss_limit_mb=2048 -artifact_prefix="$art" -print_final_stats=1 >"$log" 2>&1 || true
    local runs secs crashes
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    crashes=$(find "$art" -type f | wc -l)
    echo "FUZZ $t runs=${runs:-?} secs=${secs:-?} crashes=$crashes log=$log"
}

running=0
for t in "${targets[@]}"; do
    run "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait
! find "$work/artifacts" -type f | grep -q .
