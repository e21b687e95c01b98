//! A hostile upload cannot make a restore hold much memory, whatever its manifest declares:
//! a 1 MB archive whose manifest lists a million entries is refused with the process's peak
//! RSS (VmHWM, reset before) less than 64 MiB above where it was. One test in this binary,
//! so no other test's memory counts.

#[path = "common/hooks.rs"]
mod common;

use std::io::Write;
use std::sync::Arc;

use cfy_init::hooks::NoServices;
use cfy_init::snapshot::{Engine, RestoreSource, SnapshotError};

/// kB of `field` (VmRSS, VmHWM) in /proc/self/status.
fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A compressed archive with one member and a manifest listing `n` entries, written as it
/// is made (the test itself holds no manifest in memory).
fn write_bomb(path: &std::path::Path, n: u64) {
    let record = |i: u64| {
        format!(
            r#"{{"path":"d/e{i:07}","type":"file","mode":420,"uid":0,"gid":0,"size":0,"mtime":1700000000,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}"#
        )
    };
    let head = r#"{"format":1,"created":"2026-01-01T00:00:00Z","total_bytes":0,"entries":["#;
    let len: u64 =
        head.len() as u64 + (0..n).map(|i| record(i).len() as u64 + 1).sum::<u64>() - 1 + 2;
    let f = std::fs::File::create(path).unwrap();
    let mut z = zstd::stream::Encoder::new(f, 19).unwrap();
    z.multithread(2).unwrap();
    let block = |z: &mut dyn Write, data: &[u8]| z.write_all(data).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_path("store/x").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    block(&mut z, h.as_bytes());
    let mut h = tar::Header::new_gnu();
    h.set_path("manifest.json").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(len);
    h.set_mode(0o600);
    h.set_cksum();
    block(&mut z, h.as_bytes());
    let mut w = std::io::BufWriter::new(&mut z);
    w.write_all(head.as_bytes()).unwrap();
    for i in 0..n {
        if i > 0 {
            w.write_all(b",").unwrap();
        }
        w.write_all(record(i).as_bytes()).unwrap();
    }
    w.write_all(b"]}").unwrap();
    drop(w);
    let pad = (512 - len % 512) % 512;
    z.write_all(&vec![0u8; pad as usize + 1024]).unwrap();
    z.finish().unwrap();
}

#[test]
fn a_million_entry_manifest_stays_within_64_mib() {
    let e = common::env("");
    common::populate(&e.store());
    std::fs::create_dir_all(e.archives()).unwrap();
    let upload = e.archives().join("bomb.tar.zst");
    write_bomb(&upload, 1_000_000);
    let size = std::fs::metadata(&upload).unwrap().len();
    assert!(size < 2 << 20, "a small upload: {size} bytes");
    let engine = Engine::new(&e.ctx, Arc::new(NoServices));
    let rt = common::runtime();
    let job = engine.begin_restore().unwrap();
    // Peak RSS from here on: "5" resets VmHWM to the current RSS.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let rss = status_kb("VmRSS:");
    let result = rt.block_on(engine.run_restore(
        job,
        RestoreSource::Upload {
            path: upload,
            sha256: None,
        },
    ));
    let hwm = status_kb("VmHWM:");
    match result {
        Err(SnapshotError::Rejected(m)) => {
            assert!(
                m.contains("manifest lists 1000000 entries, archive holds 1"),
                "{m}"
            )
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let grew_mib = hwm.saturating_sub(rss) / 1024;
    eprintln!("upload {size} bytes: RSS {rss} kB before, peak {hwm} kB ({grew_mib} MiB more)");
    assert!(grew_mib < 64, "peak RSS grew by {grew_mib} MiB");
}
