//! Build-time work kept out of the init's start-up: the embedded default config converted
//! from YAML to JSON (parsing YAML was most of the start-up CPU time), and the link-time
//! layout of the release binary.
//!
//! Layout: The kernel maps an executable's code in 64 KiB
//! windows around each first touch, so an init whose start-up code is scattered over 6 MB of
//! text keeps most of it resident. The functions that start-up and an idle supervisor run are
//! listed in `linker/startup.order` (made by `scripts/gen-startup-order.sh`) and placed first,
//! together. Names missing from a build (code changed since) are skipped: the layout then
//! degrades gradually and the binary stays correct.

use std::path::Path;
use std::process::Command;

fn main() {
    embed_default_config();
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

/// `src/defaults/*.yaml` merged into one JSON object at `$OUT_DIR/default-config.json`. The
/// fragments are disjoint top-level sections; `config default` still prints the YAML itself.
fn embed_default_config() {
    println!("cargo:rerun-if-changed=src/defaults");
    let mut fragments: Vec<_> = std::fs::read_dir("src/defaults")
        .expect("src/defaults")
        .map(|e| e.expect("src/defaults entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    fragments.sort();
    let mut merged = serde_json::Map::new();
    for path in fragments {
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path).expect("read a default fragment");
        let value: serde_json::Value =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let serde_json::Value::Object(section) = value else {
            panic!("{}: not a mapping", path.display());
        };
        merged.extend(section);
    }
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("default-config.json");
    std::fs::write(out, serde_json::Value::Object(merged).to_string())
        .expect("write default-config.json");
}
