#!/usr/bin/env bash
# Release build of both binaries (cfy-init and cfy-recover) for this machine, or with
# --musl for static binaries that run on any Linux (the Cloudify 5.1 image is CentOS 7).
# Prints the directory holding them, ready for scripts/build-image.sh --prebuilt DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
target_args=() dir=target/release
if [[ ${1:-} == --musl ]]; then
  rustup target list --installed | grep -qx x86_64-unknown-linux-musl \
    || { echo "build-release: add the target first: rustup target add x86_64-unknown-linux-musl (and apt-get install musl-tools)" >&2; exit 1; }
  target_args=(--target x86_64-unknown-linux-musl) dir=target/x86_64-unknown-linux-musl/release
fi
cargo build --release --locked --workspace --bins "${target_args[@]}" >&2
echo "$PWD/$dir"
