#!/usr/bin/env bash
# Proves README's set-up on a fresh Debian 12: runs scripts/install-deps.sh in a container made
# from a bare debootstrap of Debian (scripts/make-base-rootfs.sh --plain: minbase, nothing
# added), then checks that every tool the tests and benchmarks call is there and runs.
# The Rust toolchain is the one stated assumption, so it is not checked here.
#
# Cost on one machine (2 cores): the first run debootstraps (~65 s, cached as a tarball and an
# image); every run installs the packages in a new container (~80 s, installing dominates).
# Downloaded .deb files, npm's and pip's caches are kept in named volumes (cfy-init-fresh-*),
# so later runs download nothing again.
# --no-cache drops those volumes first (a cold run).
#
# The machine's own settings that a fresh Debian would not need but this machine may
# (a TLS-inspecting proxy): its local CA certificates (/usr/local/share/ca-certificates) are
# mounted read-only, and the CA bundle variables (SSL_CERT_FILE, REQUESTS_CA_BUNDLE,
# NODE_EXTRA_CA_CERTS, PIP_CERT) are passed through when set. The apt mirror is the one
# debootstrap took from this machine's apt configuration.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
log() { echo "test-fresh-debian: $*" >&2; }

if [[ ${1:-} == --no-cache ]]; then
  docker volume rm -f cfy-init-fresh-apt cfy-init-fresh-npm cfy-init-fresh-pip >/dev/null 2>&1 || true
fi

bash "$REPO/scripts/build-image.sh" --engine-only
image=$(bash "$REPO/scripts/make-base-rootfs.sh" --plain)
log "bare Debian image $image"

args=(--rm --name "cfy-init-fresh-debian-$$"
      -v "$REPO/scripts:/src/scripts:ro"
      -v cfy-init-fresh-apt:/var/cache/apt/archives
      -v cfy-init-fresh-npm:/root/.npm
      -v cfy-init-fresh-pip:/root/.cache/pip)
if [[ -d /usr/local/share/ca-certificates ]]; then
  args+=(-v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
fi
for v in SSL_CERT_FILE REQUESTS_CA_BUNDLE NODE_EXTRA_CA_CERTS PIP_CERT; do
  [[ -n ${!v:-} ]] && args+=(-e "$v")
done

# Inside: what a new user runs (README), then every tool, each run once so that a broken
# install fails here and not in the middle of the tests.
check='
set -euo pipefail
# apt keeps the downloaded files for the cache volume (the base has no docker-clean rule,
# this only makes sure).
echo "Binary::apt::APT::Keep-Downloaded-Packages \"true\";" >/etc/apt/apt.conf.d/01keep-debs
start=$(date +%s)
bash /src/scripts/install-deps.sh
echo "install-deps.sh took $(( $(date +%s) - start ))s"
# A second run must find everything and change nothing (idempotent, fast).
start=$(date +%s)
bash /src/scripts/install-deps.sh
echo "second install-deps.sh run took $(( $(date +%s) - start ))s"
fail=0
t() { if out=$("$@" 2>&1 </dev/null); then printf "ok   %s\n" "$*"; else printf "FAIL %s: %s\n" "$*" "$(printf %s "$out" | tail -n 3)"; fail=1; fi; }
pg=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
t npm --version
t node --version
t python3 -m pip --version
t python3 -m kubernetes_validate --version
t python3 -c "import yaml, psycopg2"
t sh -c "helm version --template={{.Version}} | grep -qx v3.10.1"
t "$pg/initdb" --version
t "$pg/pg_ctl" --version
t "$pg/postgres" --version
t psql --version
t test -x /usr/lib/rabbitmq/bin/rabbitmq-server
t sh -c "command -v rabbitmqctl"
t nginx -v
t supervisord --version
t supervisorctl --help
t tini --version
t dumb-init --version
t sh -c "command -v catatonit"
t hyperfine --version
t zstd --version
t xz --version
t tar --version
t tmux -V
t jq --version
t socat -V
t curl --version
t /usr/bin/time --version
t unshare --version
t setpriv --version
t runuser --version
t setfacl --version
t setfattr --version
t mkfs.ext4 -V
t mkfs.xfs -V
t ip -V
t ss -V
t fuser --version
t pgrep --version
t gcc --version
t nm --version
t docker --version
t dockerd --version
t debootstrap --version
exit $fail
'
start=$(date +%s)
log "docker run $image: install-deps.sh, then every tool"
docker run "${args[@]}" "$image" bash -c "$check"
log "passed in $(( $(date +%s) - start ))s"
