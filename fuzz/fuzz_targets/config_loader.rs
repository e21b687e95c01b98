//! The cfy-init config loader (`Config::load`: YAML layered over the embedded default,
//! validated, re-rooted): an error naming the file for anything wrong, never a panic,
//! stack overflow or unbounded work.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use cfy_init::config::{Config, Root};
use libfuzzer_sys::fuzz_target;

fn root() -> &'static (tempfile::TempDir, PathBuf) {
    static ROOT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("cfy-init.yaml");
        (dir, file)
    })
}

fuzz_target!(|data: &[u8]| {
    let (dir, file) = root();
    std::fs::write(file, data).expect("write config");
    let _ = Config::load(Some(file), &Root::new(dir.path()));
});
