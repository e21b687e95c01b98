#!/usr/bin/env bash
# Builds the stand-in for the Cloudify Manager base image, which cannot be pulled here:
# a minimal Debian root file system (debootstrap) with PostgreSQL, RabbitMQ and nginx,
# imported with `docker import`, then laid out like the manager (docker/standin/Dockerfile:
# /etc/cloudify/config.yaml, /var/lib/pgsql/data, /var/lib/rabbitmq, /etc/nginx, /opt/...).
#
# The apt mirror is read from this machine's apt configuration, never written down here.
# The debootstrap tarball is cached under $CFY_INIT_CACHE (default /var/cache/cfy-init-test),
# keyed by suite, variant and package list, so only the first run downloads anything.
#
# Usage: scripts/make-base-rootfs.sh            prints the image name (cfy-init-standin:<key>)
#        scripts/make-base-rootfs.sh --plain    a bare Debian (minbase, nothing added), for the
#                                               fresh-machine set-up test: prints
#                                               cfy-init-debian:<suite>-<key>
# Env:   CFY_INIT_CACHE, STANDIN_SUITE (default: this machine's codename), STANDIN_IMAGE
set -euo pipefail
cd "$(dirname "$0")/.."
PLAIN=0
case ${1:-} in
  --plain) PLAIN=1 ;;
  "") ;;
  *) echo "make-base-rootfs: unknown argument $1 (--plain or nothing)" >&2; exit 2 ;;
esac

CACHE="${CFY_INIT_CACHE:-/var/cache/cfy-init-test}"
SUITE="${STANDIN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}"
VARIANT=minbase
# The services the manager runs that have Debian packages, plus what they need in a container.
PACKAGES=postgresql,rabbitmq-server,nginx,netbase,procps
((PLAIN)) && PACKAGES=
log() { echo "make-base-rootfs: $*" >&2; }
die() { log "error: $*"; exit 1; }

# The first deb mirror for $SUITE in deb822 sources, else in one-line sources.list files.
apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    awk -v suite="$SUITE" '
      BEGIN { RS=""; FS="\n" }
      {
        uris=""; suites=""; types=""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { uris=$i;   sub(/^URIs:[ \t]*/, "", uris) }
          if ($i ~ /^Suites:/) { suites=$i; sub(/^Suites:[ \t]*/, "", suites) }
          if ($i ~ /^Types:/)  { types=$i }
        }
        n = split(suites, s, /[ \t]+/)
        for (j = 1; j <= n; j++) if (s[j] == suite && types ~ /deb( |$)/) { split(uris, u, /[ \t]+/); print u[1]; exit }
      }' "$f"
  done | head -n1 | grep . && return 0
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    awk -v suite="$SUITE" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($2 ~ /^\[/) i++; if ($(i+1) == suite) { print $i; exit } }' "$f"
  done | head -n1 | grep .
}

# The image key covers the layout files too, so editing docker/standin/ rebuilds the layout.
KEY=$( { echo "$SUITE $VARIANT $PACKAGES"; find docker/standin -type f -print0 | sort -z | xargs -0r cat; } | sha256sum | cut -c1-12)
ROOTFS_KEY=$(echo "$SUITE $VARIANT $PACKAGES" | sha256sum | cut -c1-12)
IMAGE="${STANDIN_IMAGE:-cfy-init-standin:$KEY}"
ROOTFS_IMAGE="cfy-init-standin-rootfs:$ROOTFS_KEY"
((PLAIN)) && { IMAGE="cfy-init-debian:$SUITE-$ROOTFS_KEY"; ROOTFS_IMAGE=$IMAGE; }
TARBALL="$CACHE/rootfs-$SUITE-$ROOTFS_KEY.tar"

docker info >/dev/null 2>&1 || die "no Docker engine answers (start one with scripts/build-image.sh, which starts dockerd when needed)"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE"
  exit 0
fi

if [[ ! -s $TARBALL ]]; then
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  MIRROR=$(apt_mirror) || die "no deb mirror for suite $SUITE in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
  mkdir -p "$CACHE"
  work=$(mktemp -d "$CACHE/debootstrap.XXXXXX")
  # debootstrap mounts /proc and /sys inside the target while it runs: unmount whatever a
  # failed run left behind before removing the directory, never recurse into a live mount.
  cleanup() {
    local m
    for m in $(awk -v w="$work" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r); do
      umount -l "$m" || true
    done
    rm -rf --one-file-system "$work"
  }
  trap cleanup EXIT
  log "debootstrap $SUITE ($VARIANT, $PACKAGES) from the machine's apt mirror into $work (first run only)"
  debootstrap --variant="$VARIANT" ${PACKAGES:+--include="$PACKAGES"} "$SUITE" "$work/root" "$MIRROR" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  # Packages' postinst scripts may have created a cluster and logs we do not want in the image.
  rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
  tar -C "$work/root" --numeric-owner --xattrs -cf "$work/rootfs.tar" .
  mv "$work/rootfs.tar" "$TARBALL.tmp" && sync "$TARBALL.tmp" && mv "$TARBALL.tmp" "$TARBALL"
  cleanup
  trap - EXIT
fi

if ! docker image inspect "$ROOTFS_IMAGE" >/dev/null 2>&1; then
  log "docker import $TARBALL as $ROOTFS_IMAGE"
  docker import --change 'CMD ["/bin/bash"]' "$TARBALL" "$ROOTFS_IMAGE" >/dev/null
fi

((PLAIN)) && { echo "$IMAGE"; exit 0; }

log "laying out the manager's directories (docker/standin/Dockerfile) as $IMAGE"
build_log=$(mktemp)
docker build --build-arg ROOTFS="$ROOTFS_IMAGE" -t "$IMAGE" docker/standin >"$build_log" 2>&1 \
  || { tail -n 30 "$build_log" >&2; rm -f "$build_log"; die "docker build of docker/standin failed (output above)"; }
rm -f "$build_log"
echo "$IMAGE"
