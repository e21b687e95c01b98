#!/usr/bin/env bash
# Runs every test: installs what the tests need, then the whole Cargo workspace's tests
# (unit, integration as PID 1 in PID namespaces, real PostgreSQL/RabbitMQ/nginx, supervisorctl,
# Docker and Helm).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --workspace --bins
cargo test --workspace -- --test-threads=2
