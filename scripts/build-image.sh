#!/usr/bin/env bash
# Builds the manager image (cfy-init as PID 1) and the recovery sidecar image from
# docker/Dockerfile, starting a Docker engine first when none answers.
#
#   scripts/build-image.sh                        production build: compiles static binaries in
#                                                 the Rust builder stage, FROM the Cloudify image
#   scripts/build-image.sh --prebuilt "$(scripts/build-release.sh)" --standin
#                                                 binaries built beforehand, FROM the local
#                                                 stand-in base (scripts/make-base-rootfs.sh);
#                                                 what the tests do, nothing is pulled
#   scripts/build-image.sh --engine-only          just make sure a Docker engine answers
#
# Options: --base IMAGE (FROM for the manager), --tag TAG (manager, default
# cfy-manager:cfy-init), --sidecar-tag TAG (default cfy-recover:latest), --build-arg K=V
# (passed on, e.g. PRELINK_DIRS=).
# Prints `manager=<tag>` and `sidecar=<tag>` on stdout, then each image's size
# (`size manager=<bytes>`); progress goes to stderr. The images carry the OCI labels
# version (Cargo.toml), revision (git HEAD) and source (git's origin URL, or
# $CFY_INIT_SOURCE).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"

PREBUILT="" BASE="" STANDIN=0 ENGINE_ONLY=0
TAG=cfy-manager:cfy-init SIDECAR_TAG=cfy-recover:latest EXTRA_ARGS=()
log() { echo "build-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

while (($#)); do
  case $1 in
    --prebuilt) PREBUILT=${2:?--prebuilt needs a directory}; shift 2 ;;
    --base) BASE=${2:?--base needs an image}; shift 2 ;;
    --standin) STANDIN=1; shift ;;
    --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
    --sidecar-tag) SIDECAR_TAG=${2:?--sidecar-tag needs a value}; shift 2 ;;
    --engine-only) ENGINE_ONLY=1; shift ;;
    --build-arg) EXTRA_ARGS+=(--build-arg "${2:?--build-arg needs KEY=VALUE}"); shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

# A Docker engine for this machine: when none answers, start Debian's dockerd in the
# background with its own data root on the local disk, overlay2 when the kernel allows it
# (else vfs), and wait for its socket.
ensure_engine() {
  docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null || die "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
  local data_root=${CFY_INIT_DOCKER_ROOT:-/var/lib/cfy-init-test/docker}
  local logfile=${CFY_INIT_DOCKER_LOG:-/var/log/cfy-init-test-dockerd.log}
  local driver
  mkdir -p "$data_root" "$(dirname "$logfile")"
  for driver in overlay2 vfs; do
    log "starting dockerd (storage driver $driver, data root $data_root, log $logfile)"
    setsid dockerd --data-root "$data_root" --storage-driver "$driver" \
      --pidfile /run/cfy-init-test-dockerd.pid >>"$logfile" 2>&1 </dev/null &
    local pid=$! i
    for i in $(seq 1 120); do
      docker info >/dev/null 2>&1 && { log "dockerd (pid $pid) answers"; return 0; }
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    log "dockerd did not come up with $driver (last lines of $logfile:)"
    tail -n 5 "$logfile" >&2 || true
  done
  die "could not start dockerd; see $logfile"
}

# Binaries first: a missing one must not be found only after the base image's build.
if [[ -n $PREBUILT ]]; then
  for b in cfy-init cfy-recover; do
    [[ -x $PREBUILT/$b ]] || die "$PREBUILT/$b is missing: build both first (scripts/build-release.sh builds cfy-init and cfy-recover, statically)"
  done
fi

ensure_engine
((ENGINE_ONLY)) && exit 0

if ((STANDIN)) && [[ -z $BASE ]]; then
  BASE=$("$REPO/scripts/make-base-rootfs.sh")
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/Cargo.toml" | head -n1)
revision=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)
git -C "$REPO" diff --quiet HEAD 2>/dev/null || revision="$revision-dirty"
source_url=${CFY_INIT_SOURCE:-$(git -C "$REPO" config --get remote.origin.url 2>/dev/null || echo unknown)}
args=(--build-arg "BASE_IMAGE=${BASE:-cloudifyplatform/community-cloudify-manager-aio:5.1.2}"
      --build-arg "VERSION=${version:-unknown}" --build-arg "REVISION=$revision"
      --build-arg "SOURCE=$source_url")
if [[ -n $PREBUILT ]]; then
  # A small build context (not the whole repository and its target/): the Dockerfile's
  # inputs and the two binaries.
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/cfy-init-image.XXXXXX")
  trap 'rm -rf "$ctx"' EXIT
  mkdir -p "$ctx/docker" "$ctx/scripts" "$ctx/prebuilt"
  cp "$REPO/docker/Dockerfile" "$REPO/docker/config.yaml" "$ctx/docker/"
  cp "$REPO/scripts/start-persistent.sh" "$REPO/scripts/setup-secret.sh" \
     "$REPO/scripts/load-resolver-rules.py" "$ctx/scripts/"
  cp "$PREBUILT/cfy-init" "$PREBUILT/cfy-recover" "$ctx/prebuilt/"
  # The sidecar's CA certificates: Debian's Mozilla bundle (ca-certificates), not this
  # machine's bundle, which may hold local additions.
  cas=(/usr/share/ca-certificates/mozilla/*.crt)
  [[ -r ${cas[0]} ]] || die "no CA certificates in /usr/share/ca-certificates/mozilla (apt-get install ca-certificates)"
  cat "${cas[@]}" >"$ctx/prebuilt/ca-certificates.crt"
  # Any image with /bin/sh serves as the "builder" that only copies the binaries, so that
  # nothing is pulled (the sidecar is FROM scratch).
  local_base=${BASE:?--prebuilt needs --base IMAGE or --standin}
  args+=(--build-arg "BUILDER_IMAGE=$local_base" --build-arg PREBUILT=prebuilt)
else
  ctx=$REPO
fi

args+=("${EXTRA_ARGS[@]}")
build() {
  local target=$1 tag=$2 out
  out=$(mktemp)
  log "docker build --target $target -t $tag"
  if ! docker build -f "$ctx/docker/Dockerfile" "${args[@]}" --target "$target" -t "$tag" "$ctx" >"$out" 2>&1; then
    tail -n 40 "$out" >&2
    rm -f "$out"
    die "docker build --target $target failed (output above)"
  fi
  rm -f "$out"
}
build recover-sidecar "$SIDECAR_TAG"
build manager "$TAG"
if ((STANDIN)); then
  # Rebuilds leave the previous images and the builder stage untagged: drop those (only
  # images made from the stand-in carry its label, nothing else on the engine is touched).
  docker image prune -f --filter dangling=true --filter label=io.cfy-init.standin=1 >/dev/null || true
fi
echo "manager=$TAG"
echo "sidecar=$SIDECAR_TAG"
for kv in "manager=$TAG" "sidecar=$SIDECAR_TAG"; do
  echo "size ${kv%%=*}=$(docker image inspect -f '{{.Size}}' "${kv#*=}")"
done
