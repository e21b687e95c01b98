//! Link-time layout of the release binary. The kernel maps an executable's code in 64 KiB
//! windows around each first touch, so an init whose start-up code is scattered over 6 MB of
//! text keeps most of it resident. The functions that start-up and an idle supervisor run are
//! listed in `linker/startup.order` (made by `scripts/gen-startup-order.sh`) and placed first,
//! together. Names missing from a build (code changed since) are skipped: the layout then
//! degrades gradually and the binary stays correct.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=linker/startup.order");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("PROFILE").as_deref() == Ok("release") && links_with_lld() {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let order = format!("{dir}/linker/startup.order");
        println!("cargo:rustc-link-arg-bin=cfy-init=-Wl,--symbol-ordering-file={order}");
        println!("cargo:rustc-link-arg-bin=cfy-init=-Wl,--no-warn-symbol-ordering");
    }
}

/// The ordering option is LLD's: rustc links x86_64-unknown-linux-gnu with its bundled LLD
/// from 1.90 on; other targets and older compilers may use GNU ld, which lacks it.
fn links_with_lld() -> bool {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_ARCH") != "x86_64"
        || var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
    {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (...)": compare the minor version.
    let text = String::from_utf8_lossy(&out.stdout);
    let minor = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
