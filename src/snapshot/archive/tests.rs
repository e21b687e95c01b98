//! Round trips of the archive writer through the verifier.

use super::*;
use crate::snapshot::{copy, verify, Limits};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// A small store: nested directories, files of several sizes, a relative link, and
/// modes and mtimes that must survive the copy.
fn make_store(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    for (i, rel) in ["f0", "a/f1", "a/b/f2", "a/b/c/f3", "a/b/c/f4"]
        .iter()
        .enumerate()
    {
        let p = root.join(rel);
        fs::write(&p, vec![b'x' + i as u8; 1000 * i * i + 7]).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600 + i as u32)).unwrap();
        let t = filetime::FileTime::from_unix_time(1_600_000_000 + i as i64, 0);
        filetime::set_file_mtime(&p, t).unwrap();
    }
    std::os::unix::fs::symlink("b/f2", root.join("a/link")).unwrap();
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    let t = filetime::FileTime::from_unix_time(1_500_000_000, 0);
    filetime::set_file_mtime(root.join("a/b"), t).unwrap();
}

/// Regular files below `root` (links are left to the staging removal).
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        let ft = fs::symlink_metadata(&p).unwrap().file_type();
        if ft.is_dir() {
            out.extend(files_under(&p));
        } else if ft.is_file() {
            out.push(p);
        }
    }
    out
}

/// Everything below `root` as (path, mode, content or link target), for comparisons.
fn tree(root: &Path) -> Vec<(String, u32, Vec<u8>)> {
    walk_tree(root)
        .unwrap()
        .into_iter()
        .map(|f| {
            let data = match &f.link {
                Some(t) => t.clone().into_bytes(),
                None if f.meta.is_file() => fs::read(&f.path).unwrap(),
                None => Vec::new(),
            };
            (f.rel, f.meta.mode() & 0o7777, data)
        })
        .collect()
}

fn extract(out: &Path, to: &Path, sha: &str) {
    verify::extract_verified(out, to, &Limits::default(), Some(sha), &AtomicU64::new(0)).unwrap();
}

/// A second pass re-reads exactly what changed (and the chunk-mates of what changed),
/// the stale chunks become skippable frames, and the archive is the tree at the
/// second pass: changed, deleted, new and re-moded entries, and a large file in pieces.
#[test]
fn a_later_pass_replaces_what_changed_since_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    make_store(&store);
    let big: Vec<u8> = (0..(2 * CHUNK_BYTES + 12345))
        .map(|i| (i % 251) as u8)
        .collect();
    fs::write(store.join("big"), &big).unwrap();
    fs::create_dir(store.join("gone")).unwrap();
    fs::write(store.join("gone/x"), b"x").unwrap();
    let out = tmp.path().join("a.tar.zst");
    let comp = Compression::default();
    let mut w = ArchiveWriter::create(&store, &out, &comp, false).unwrap();
    w.racy_margin = Duration::ZERO; // nothing here changes within a timestamp tick
    let first = w.pass(&AtomicU64::new(0)).unwrap();
    assert_eq!(first.entries, tree(&store).len());
    assert_eq!(
        w.pass(&AtomicU64::new(0)).unwrap().entries,
        0,
        "nothing changed"
    );

    // Only the large file changes: only it is read again.
    let mut big2 = big.clone();
    big2[CHUNK_BYTES as usize + 7] ^= 0xff;
    fs::write(store.join("big"), &big2).unwrap();
    let p = w.pass(&AtomicU64::new(0)).unwrap();
    assert_eq!((p.entries, p.bytes), (1, big.len() as u64));

    // Small changes: the large file is not read again.
    fs::write(store.join("a/f1"), b"changed").unwrap();
    fs::remove_dir_all(store.join("gone")).unwrap();
    fs::write(store.join("a/b/new"), b"new file").unwrap();
    fs::set_permissions(store.join("a/b/c"), fs::Permissions::from_mode(0o700)).unwrap();
    let p = w.pass(&AtomicU64::new(0)).unwrap();
    assert!(p.entries >= 3 && p.bytes < big.len() as u64, "{p:?}");
    assert!(w.first_patched.is_some());
    let written = w.finish("t").unwrap();
    // The first copy of the large file was most of the file: it was compacted away.
    assert!(!frame_magics(&out).iter().any(|m| is_skippable(*m)));
    assert_eq!(fs::metadata(&out).unwrap().len(), written.size);
    assert_eq!(written.entries, tree(&store).len());

    let back = tmp.path().join("back");
    extract(&out, &back, &written.sha256);
    assert_eq!(tree(&back), tree(&store));
    let whole = hex::encode(Sha256::digest(fs::read(&out).unwrap()));
    assert_eq!(whole, written.sha256);
}

/// The magic number of every zstd frame in `path`, in order.
fn frame_magics(path: &Path) -> Vec<u32> {
    let data = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        out.push(u32::from_le_bytes(data[off..off + 4].try_into().unwrap()));
        off += zstd::zstd_safe::find_frame_compressed_size(&data[off..]).unwrap();
    }
    out
}

fn is_skippable(magic: u32) -> bool {
    magic & 0xFFFF_FFF0 == 0x184D_2A50
}

/// A small change in a large archive is left as a skippable frame (not worth a
/// rewrite), which the verifier steps over; the checksum covers the patched file.
#[test]
fn a_small_change_leaves_a_skipped_frame_that_readers_step_over() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    make_store(&store);
    // Incompressible, so that the small chunk is a small part of the archive.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..CHUNK_BYTES + 4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(store.join("noise"), &noise).unwrap();
    let out = tmp.path().join("a.tar.zst");
    let mut w = ArchiveWriter::create(&store, &out, &Compression::default(), false).unwrap();
    w.racy_margin = Duration::ZERO;
    w.pass(&AtomicU64::new(0)).unwrap();
    fs::write(store.join("a/b/f2"), b"changed").unwrap();
    let p = w.pass(&AtomicU64::new(0)).unwrap();
    assert!(p.bytes < 1 << 20, "{p:?}");
    let written = w.finish("t").unwrap();
    assert_eq!(
        frame_magics(&out)
            .iter()
            .filter(|m| is_skippable(**m))
            .count(),
        1
    );
    let back = tmp.path().join("back");
    extract(&out, &back, &written.sha256);
    assert_eq!(tree(&back), tree(&store));
    let whole = hex::encode(Sha256::digest(fs::read(&out).unwrap()));
    assert_eq!(whole, written.sha256);
}

/// Entries changed within the racy margin before a walk are read again by the next
/// pass even when their stamp looks the same.
#[test]
fn recently_changed_entries_are_read_again() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    make_store(&store);
    let out = tmp.path().join("a.tar.zst");
    let mut w = ArchiveWriter::create(&store, &out, &Compression::default(), false).unwrap();
    w.racy_margin = Duration::from_secs(3600);
    let n = w.pass(&AtomicU64::new(0)).unwrap().entries;
    assert_eq!(w.pass(&AtomicU64::new(0)).unwrap().entries, n);
    let written = w.finish("t").unwrap();
    assert!(!frame_magics(&out).iter().any(|m| is_skippable(*m)));
    let back = tmp.path().join("back");
    extract(&out, &back, &written.sha256);
    assert_eq!(tree(&back), tree(&store));
}

/// Parallel copy, consuming archive, verified restore: what comes back is the store.
#[test]
fn staged_copy_archived_and_consumed_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    make_store(&store);
    let staged = tmp.path().join("staged");
    let bytes = AtomicU64::new(0);
    copy::copy_tree(&store, &staged, &bytes).unwrap();
    let want_bytes: u64 = (0..5u64).map(|i| 1000 * i * i + 7).sum();
    assert_eq!(bytes.load(Ordering::Relaxed), want_bytes);
    let meta_b = fs::metadata(staged.join("a/b")).unwrap();
    assert_eq!(meta_b.mode() & 0o7777, 0o750);
    assert_eq!(meta_b.mtime(), 1_500_000_000);

    let out = tmp.path().join("snap.tar.zst");
    let comp = Compression::default();
    let w = write_archive(&staged, &out, &comp, "t", &AtomicU64::new(0)).unwrap();
    assert_eq!(w.total_bytes, want_bytes);
    assert!(
        files_under(&staged).is_empty(),
        "every staged file was consumed"
    );

    let back = tmp.path().join("back");
    let v = verify::extract_verified(
        &out,
        &back,
        &Limits::default(),
        Some(&w.sha256),
        &AtomicU64::new(0),
    )
    .unwrap();
    assert_eq!(v.entries, w.entries);
    for rel in ["f0", "a/f1", "a/b/f2", "a/b/c/f3", "a/b/c/f4"] {
        let (a, b) = (store.join(rel), back.join(rel));
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "{rel}");
        let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
        assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "{rel}");
        assert_eq!(ma.mtime(), mb.mtime(), "{rel}");
    }
    assert_eq!(
        fs::read_link(back.join("a/link")).unwrap(),
        Path::new("b/f2")
    );
}
