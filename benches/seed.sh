#!/usr/bin/env bash
# Seeding benchmark: cfy-init persist vs cp -a on a generated Cloudify-shaped tree of
# >= 100 000 files and >= 1 GB (benches/gen_tree.py), both writing into a store on the same
# file system. Page caches are dropped before every timed run (when /proc allows it) so both
# start cold. cfy-init also makes its copy durable (syncfs) before linking; cp -a does not,
# so a second line compares against `cp -a` followed by `sync -f` on the store.
# Env: SEED_FILES (default 100000), SEED_MB (default 1100), BENCH_DIR (default /var/tmp).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
FILES=${SEED_FILES:-100000}
MB=${SEED_MB:-1100}
[ -x "$CFY_INIT" ] || build_release
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/cfy-seed-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DIRS="var/lib etc/cloudify opt/cfy opt/cloudify opt/cloudify-stage opt/manager opt/mgmtworker opt/restservice"

drop_caches() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

now() { date +%s.%N; }
calc() { python3 -c "print(round($1, 3))"; }

python3 "$(dirname "$0")/gen_tree.py" "$WORK/r" "$FILES" "$MB"
echo "tree: $(find "$WORK/r" | wc -l) entries, $(du -sm "$WORK/r" | cut -f1) MB on disk"

# Earlier copies are moved aside, not deleted, until the end: this ext4 has no journal, and
# there its inode allocator skips (and re-checks on every create) inodes freed in the last
# 60-300 s, so a copy made right after `rm -rf` of 100 000 files spent over half its
# (kernel) CPU time in ext4's recently_deleted() (perf) and ran ~2x slower, for cp -a and
# cfy-init alike. A store volume being seeded is fresh, so that is not what we measure.
set_aside() { [ ! -e "$1" ] || mv "$1" "$WORK/old/$(date +%s%N)"; }
mkdir "$WORK/old"

reset_image() {  # undo the previous cfy-init run: image directories back, empty store
  set_aside "$WORK/r/cfy-persist"; mkdir "$WORK/r/cfy-persist"
  for d in $DIRS; do
    if [ -L "$WORK/r/$d" ]; then rm "$WORK/r/$d"; mv "$WORK/r/$d-initial" "$WORK/r/$d"; fi
  done
}

run_cp() {  # cp -a of every directory into a store, like the legacy script (cp -rp) but keeping more
  reset_image
  set_aside "$WORK/cp"; mkdir -p "$WORK/cp"
  drop_caches
  local t0 t1 t2
  t0=$(now)
  for d in $DIRS; do
    mkdir -p "$WORK/cp/$(dirname "$d")"
    cp -a "$WORK/r/$d" "$WORK/cp/$(dirname "$d")/"
  done
  t1=$(now)
  sync -f "$WORK/cp"
  t2=$(now)
  CP=$(calc "$t1 - $t0"); CPSYNC=$(calc "$t2 - $t0")
}

run_cfy() {
  reset_image
  drop_caches
  local t0 t1
  t0=$(now)
  CFY_INIT_LOG=warn "$CFY_INIT" --root "$WORK/r" persist
  t1=$(now)
  CFY=$(calc "$t1 - $t0")
}

best_cp=999999; best_cpsync=999999; best_cfy=999999
for round in 1 2; do
  run_cp; run_cfy
  echo "round $round: cp -a ${CP}s, cp -a + sync ${CPSYNC}s, cfy-init persist ${CFY}s"
  best_cp=$(calc "min($CP, $best_cp)")
  best_cpsync=$(calc "min($CPSYNC, $best_cpsync)")
  best_cfy=$(calc "min($CFY, $best_cfy)")
done
# Spot check: the seeded store matches what cp -a made (content, owners, modes, links).
if ! diff -r --no-dereference -x .cfy-init -x fifo "$WORK/cp" "$WORK/r/cfy-persist" >/dev/null; then
  echo "seeded store differs from cp -a" >&2; exit 1
fi
ratio "seed-vs-cp-a" "$best_cfy" "cp -a" "$best_cp" s "<= 0.5"
ratio "seed-vs-cp-a+sync" "$best_cfy" "cp -a + sync" "$best_cpsync" s "<= 0.5"
