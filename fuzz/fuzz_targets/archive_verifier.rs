//! The snapshot archive verifier's public entry point (`extract_verified`: zstd, then tar,
//! every member checked, extracted into a fresh staging dir only). An input starting with
//! byte 0 is the rest compressed by the target first, so the fuzzer reaches the tar and
//! manifest checks and not only zstd's frame check. Rejected or accepted, never a panic,
//! and nothing written outside the staging dir.
#![no_main]

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use cfy_init::snapshot::{verify, Limits};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    let archive = dir.path().join("in.tar.zst");
    let staging = dir.path().join("staging");
    let bytes = match data.split_first() {
        Some((0, tar)) => zstd::encode_all(tar, 1).expect("compress"),
        _ => data.to_vec(),
    };
    std::fs::write(&archive, bytes).expect("write archive");
    let limits = Limits {
        max_total_bytes: 4 << 20,
        max_file_bytes: 1 << 20,
        max_entries: 1000,
        max_upload_bytes: 4 << 20,
    };
    let _ = verify::extract_verified(&archive, &staging, &limits, None, &AtomicU64::new(0));
    let _ = std::fs::remove_dir_all(&staging);
    // The verifier must never create anything beside the staging dir.
    for e in std::fs::read_dir(dir.path()).expect("list") {
        let name = e.expect("entry").file_name();
        assert!(name == "in.tar.zst", "created outside staging: {name:?}");
    }
});
