#!/usr/bin/env bash
# Runs every benchmark (benches/*.sh except this file and lib.sh) and prints their RATIO lines.
set -euo pipefail
cd "$(dirname "$0")"
source ./lib.sh
bash ../scripts/install-deps.sh
build_release
for b in *.sh; do
  case "$b" in run.sh|lib.sh) continue ;; esac
  echo "== $b"
  bash "$b"
done
