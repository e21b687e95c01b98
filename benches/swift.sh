#!/usr/bin/env bash
# Upload throughput to a real Swift (scripts/openstack/swift.sh, Keystone auth, loopback):
# `cfy-init snapshot upload` (static large object, per-segment MD5 check, sha256 of the whole
# archive, resume journal) vs `swift upload` of python3-swiftclient with the same segment size,
# same incompressible file, runs interleaved (ours, theirs, ours, ...), medians compared.
#   SIZE_MIB (default 512), SEGMENT_MIB (default 64), ROUNDS (default 3)
# Run it under the build lock on a shared machine: flock /tmp/cfy-build.lock bash benches/swift.sh
source "$(dirname "$0")/lib.sh"
[ -x "$CFY_INIT" ] || build_release
SIZE_MIB="${SIZE_MIB:-512}"
SEGMENT_MIB="${SEGMENT_MIB:-64}"
ROUNDS="${ROUNDS:-3}"
W="$(mktemp -d /tmp/cfy-bench-swift.XXXXXX)"
trap 'rm -rf "$W"' EXIT

bash "$BENCH_ROOT/scripts/openstack/swift.sh" up >/dev/null 2>"$W/up.log" || { cat "$W/up.log"; exit 1; }
mkdir -p "$W/etc/openstack" "$W/etc/cfy-init" "$W/snapshots"
bash "$BENCH_ROOT/scripts/openstack/swift.sh" env >"$W/etc/openstack/clouds.yaml"
ID=20260101T000000000000000Z-beef
head -c $((SIZE_MIB << 20)) /dev/urandom >"$W/snapshots/$ID.tar.zst"
SHA=$(sha256sum "$W/snapshots/$ID.tar.zst" | cut -d' ' -f1)
cat >"$W/snapshots/$ID.json" <<JSON
{"id":"$ID","created":1767225600,"size":$((SIZE_MIB << 20)),"sha256":"$SHA","entries":1,"total_bytes":0,"pause_ms":0,"duration_ms":0,"reflinked":false}
JSON
C_OURS="bench-ours-$$" C_PEER="bench-peer-$$"
cat >"$W/etc/cfy-init/config.yaml" <<YAML
hooks:
  socket: /run/cfy-init/control.sock
snapshot:
  archive_dir: /snapshots
  remote:
    cloud: cfy-member
    clouds_file: /etc/openstack/clouds.yaml
    container: $C_OURS
    keep: 0
    segment_size: ${SEGMENT_MIB}MiB
YAML
PW=$(awk '$1=="demo-member"{print $2}' "${CFY_OS_DIR:-/var/lib/cfy-openstack}/passwords")
export OS_AUTH_URL=http://127.0.0.1:5000/v3 OS_USERNAME=demo-member OS_PASSWORD="$PW" \
  OS_PROJECT_NAME=demo OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default ST_AUTH_VERSION=3
ours() {
  "$CFY_INIT" --root "$W" --config "$W/etc/cfy-init/config.yaml" snapshot upload "$ID" >/dev/null
  rm -rf "$W/snapshots/.remote-journal"
}
theirs() {
  (cd "$W/snapshots" && swift upload -q -S $((SEGMENT_MIB << 20)) "$C_PEER" "$ID.tar.zst" >/dev/null)
}
clean() { swift delete -q "$1" >/dev/null 2>&1 || true; swift delete -q "${1}_segments" >/dev/null 2>&1 || true; }
timed() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
O=() T=()
for r in $(seq 1 "$ROUNDS"); do
  clean "$C_OURS"; O+=("$(timed ours)")
  clean "$C_PEER"; T+=("$(timed theirs)")
  echo "round $r: cfy-init ${O[-1]} s, swift upload ${T[-1]} s" >&2
done
clean "$C_OURS"; clean "$C_PEER"
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
MO=$(median "${O[@]}") MT=$(median "${T[@]}")
ratio "swift upload throughput (${SIZE_MIB} MiB, ${SEGMENT_MIB} MiB segments)" \
  "$(echo "$SIZE_MIB / $MO" | bc -l)" "swift upload" "$(echo "$SIZE_MIB / $MT" | bc -l)" " MiB/s" ">= 1.0x"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
