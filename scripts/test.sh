#!/usr/bin/env bash
# Runs every test: installs what the tests need, then the whole Cargo workspace's tests
# (unit, integration as PID 1 in PID namespaces, real PostgreSQL/RabbitMQ/nginx, supervisorctl,
# Docker and Helm), then the set-up itself on a fresh Debian 12 container.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --workspace --bins
cargo test --workspace --no-fail-fast -- --test-threads=2
# README's set-up on a bare Debian 12 container (debootstrap): every tool afterwards.
bash scripts/test-fresh-debian.sh
