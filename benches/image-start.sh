#!/usr/bin/env bash
# Container start-up cost of the state directories on an image the size of a real manager's:
# the stand-in base plus a generated Cloudify-shaped tree (benches/gen_tree.py, virtualenv-like,
# IMAGE_START_MB megabytes in IMAGE_START_FILES files) in the eight state directories, built
# twice from docker/Dockerfile:
#   prelinked   the shipped image: the directories are links into the store from the build on
#   copying     PRELINK_DIRS= (the old image): every new container's first boot renames each
#               directory to <dir>-initial, which on overlayfs means copying it
# For each: one container seeds a new volume (both pay that copy once per store), then a
# second, new container on the same volume runs `cfy-init persist` (what every later
# container start pays). Times are wall clock of `docker run --rm ... persist`, minus nothing;
# a container that runs `true` is printed as the floor.
# Env: IMAGE_START_FILES (default 100000), IMAGE_START_MB (default 3000), BENCH_DIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
FILES=${IMAGE_START_FILES:-100000}
MB=${IMAGE_START_MB:-3000}
build_release
bash "$BENCH_ROOT/scripts/build-image.sh" --engine-only
base=$(bash "$BENCH_ROOT/scripts/make-base-rootfs.sh")
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/cfy-image-start.XXXXXX")
tag=cfy-init-bench/image-start vol=cfy-init-bench-image-start
cleanup() {
  docker volume rm -f "$vol-prelinked" "$vol-copying" >/dev/null 2>&1 || true
  docker image rm -f "$tag:prelinked" "$tag:copying" "$tag:base" "$tag-sidecar:x" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { python3 -c "print(round($2 - $1, 2))"; }

python3 "$(dirname "$0")/gen_tree.py" "$WORK/tree" "$FILES" "$MB" >/dev/null
# gen_tree.py puts <dir>/env/... under each state directory: lay it over the base's.
tar -C "$WORK/tree" --numeric-owner --xattrs -cf "$WORK/ctx.tar" . 2>/dev/null || tar -C "$WORK/tree" --numeric-owner -cf "$WORK/ctx.tar" .
mkdir -p "$WORK/ctx" && mv "$WORK/ctx.tar" "$WORK/ctx/tree.tar"
printf 'ARG BASE\nFROM ${BASE}\nADD tree.tar /\n' >"$WORK/ctx/Dockerfile"
docker build -q --build-arg BASE="$base" -t "$tag:base" "$WORK/ctx" >/dev/null
echo "tree: $FILES files, $(du -sm "$WORK/tree" | cut -f1) MB; base image $(docker image inspect -f '{{.Size}}' "$tag:base") bytes"
rm -rf "$WORK/tree" "$WORK/ctx"

bin=$("$BENCH_ROOT/scripts/build-release.sh")
for mode in prelinked copying; do
  extra=()
  [[ $mode == copying ]] && extra=(--build-arg PRELINK_DIRS=)
  bash "$BENCH_ROOT/scripts/build-image.sh" --prebuilt "$bin" --base "$tag:base" \
    --tag "$tag:$mode" --sidecar-tag "$tag-sidecar:x" "${extra[@]}" >/dev/null
  echo "$mode image: $(docker image inspect -f '{{.Size}}' "$tag:$mode") bytes"
done

run_persist() { # mode
  docker run --rm -e CFY_INIT_CONFIG=/etc/cfy-init/standin.yaml \
    -v "$vol-$1:/cfy-persist" "$tag:$1" persist >/dev/null 2>&1
}
t0=$(now); docker run --rm --entrypoint true "$tag:prelinked"; t1=$(now)
echo "floor (docker run true): $(secs "$t0" "$t1")s"
declare -A first later
for mode in prelinked copying; do
  docker volume create "$vol-$mode" >/dev/null
  sync
  t0=$(now); run_persist "$mode"; t1=$(now); first[$mode]=$(secs "$t0" "$t1")
  sync
  t0=$(now); run_persist "$mode"; t1=$(now); later[$mode]=$(secs "$t0" "$t1")
  echo "$mode: first container (seeds the store) ${first[$mode]}s, next new container ${later[$mode]}s"
done
ratio "image-start-new-container" "${later[prelinked]}" "copy-to-initial" "${later[copying]}" s "< 1 (seconds saved per container start)"
ratio "image-start-first-seed" "${first[prelinked]}" "copy-to-initial" "${first[copying]}" s "<= 1"
