#!/usr/bin/env bash
# Release build of both binaries (cfy-init and cfy-recover), statically linked so that the
# same files run on any Linux (the Cloudify 5.1 image is CentOS 7, glibc 2.17), and prints the
# directory holding them, ready for scripts/build-image.sh --prebuilt DIR.
#   (default)  glibc, static and not position-independent: no dynamic loader, no relocations
#              at start-up, only the parts of libc that are used (see src/process.rs for the
#              name-service lookups this allows)
#   --musl     musl instead (needs: rustup target add x86_64-unknown-linux-musl, musl-tools)
#   --dynamic  the plain `cargo build --release` binaries (target/release), for comparison
# The flags need an explicit --target: without one cargo would also apply them to proc-macros,
# which cannot be linked statically.
set -euo pipefail
cd "$(dirname "$0")/.."
case ${1:-} in
  --musl)
    rustup target list --installed | grep -qx x86_64-unknown-linux-musl \
      || { echo "build-release: add the target first: rustup target add x86_64-unknown-linux-musl (and apt-get install musl-tools)" >&2; exit 1; }
    target=x86_64-unknown-linux-musl ;;
  --dynamic)
    cargo build --release --locked --workspace --bins >&2
    echo "$PWD/target/release"
    exit 0 ;;
  "")
    target=x86_64-unknown-linux-gnu
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" ;;
  *) echo "build-release: unknown argument $1 (--musl or --dynamic)" >&2; exit 2 ;;
esac
cargo build --release --locked --workspace --bins --target "$target" >&2
echo "$PWD/target/$target/release"
