//! A corpus of hostile and broken archives: each is rejected with a reason, nothing is
//! written outside the staging directory, no staging is left behind, and the live store
//! is unchanged.

#[path = "common/hooks.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cfy_init::hooks::NoServices;
use cfy_init::snapshot::{Engine, RestoreSource, SnapshotError};
use common::{env, fingerprint, populate};
use sha2::Digest;

/// One tar member, written with raw header fields so that names the tar crate would
/// refuse (`..`, absolute) can be produced.
struct Member {
    name: Vec<u8>,
    kind: tar::EntryType,
    data: Vec<u8>,
    link: Option<Vec<u8>>,
}

fn file(name: &str, data: &[u8]) -> Member {
    Member {
        name: name.as_bytes().to_vec(),
        kind: tar::EntryType::Regular,
        data: data.to_vec(),
        link: None,
    }
}
fn dir(name: &str) -> Member {
    Member {
        name: name.as_bytes().to_vec(),
        kind: tar::EntryType::Directory,
        data: vec![],
        link: None,
    }
}
fn link(name: &str, target: &str, kind: tar::EntryType) -> Member {
    Member {
        name: name.as_bytes().to_vec(),
        kind,
        data: vec![],
        link: Some(target.as_bytes().to_vec()),
    }
}

/// The manifest record a member would have, as the writer would make it.
fn manifest_entry(m: &Member) -> serde_json::Value {
    let path = String::from_utf8_lossy(&m.name)
        .trim_start_matches("store/")
        .trim_end_matches('/')
        .to_string();
    let mut e = serde_json::json!({
        "path": path, "mode": 0o644, "uid": 0, "gid": 0, "size": 0, "mtime": 1_700_000_000u64,
    });
    match m.kind {
        tar::EntryType::Directory => e["type"] = "dir".into(),
        tar::EntryType::Fifo => e["type"] = "fifo".into(),
        tar::EntryType::Link => {
            e["type"] = "hardlink".into();
            e["link"] = String::from_utf8_lossy(m.link.as_ref().unwrap())
                .trim_start_matches("store/")
                .to_string()
                .into();
        }
        tar::EntryType::Symlink => {
            e["type"] = "symlink".into();
            e["link"] = String::from_utf8_lossy(m.link.as_ref().unwrap())
                .into_owned()
                .into();
        }
        _ => {
            e["type"] = "file".into();
            e["size"] = (m.data.len() as u64).into();
            e["sha256"] = hex::encode(sha2::Sha256::digest(&m.data)).into();
        }
    }
    e
}

fn header(m: &Member) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        assert!(m.name.len() < 100);
        g.name[..m.name.len()].copy_from_slice(&m.name);
        if let Some(l) = &m.link {
            g.linkname[..l.len()].copy_from_slice(l);
        }
    }
    h.set_entry_type(m.kind);
    h.set_size(m.data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

/// tar + zstd of `members`, then a manifest (generated from them unless given).
fn build(members: &[Member], manifest: Option<serde_json::Value>) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for m in members {
        if m.name.len() >= 100 {
            // A GNU long-name record, as the tar crate writes one.
            let mut h = header(&file("x", b""));
            h.set_entry_type(m.kind);
            h.set_size(m.data.len() as u64);
            let name = String::from_utf8(m.name.clone()).unwrap();
            tar.append_data(&mut h, name, m.data.as_slice()).unwrap();
            continue;
        }
        tar.append(&header(m), m.data.as_slice()).unwrap();
    }
    let manifest = manifest.unwrap_or_else(|| {
        let entries: Vec<_> = members.iter().map(manifest_entry).collect();
        let total: u64 = members.iter().map(|m| m.data.len() as u64).sum();
        serde_json::json!({ "format": 1, "created": "2026-01-01T00:00:00Z", "entries": entries, "total_bytes": total })
    });
    let json = serde_json::to_vec(&manifest).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(json.len() as u64);
    h.set_mode(0o600);
    h.set_cksum();
    tar.append_data(&mut h, "manifest.json", json.as_slice())
        .unwrap();
    let raw = tar.into_inner().unwrap();
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    enc.write_all(&raw).unwrap();
    enc.finish().unwrap()
}

struct Fixture {
    e: common::Env,
    engine: Arc<Engine>,
    outside: PathBuf,
}

fn fixture(extra: &str) -> Fixture {
    let e = env(extra);
    populate(&e.store());
    let outside = e.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), "keep").unwrap();
    let engine = Engine::new(&e.ctx, Arc::new(NoServices));
    Fixture { e, engine, outside }
}

/// Restore `bytes` as an upload and check that it is rejected, citing `reason`, with
/// the store and everything outside untouched.
fn assert_rejected(f: &Fixture, case: &str, bytes: &[u8], reason: &str) {
    let store = f.e.store();
    let before = fingerprint(&store);
    let outside_before = fingerprint(&f.outside);
    let root_before = fingerprint(f.e.root());
    let upload = f.e.archives().join(format!("upload-{case}"));
    std::fs::create_dir_all(f.e.archives()).unwrap();
    std::fs::write(&upload, bytes).unwrap();
    let job = f.engine.begin_restore().unwrap();
    let result = common::runtime().block_on(f.engine.run_restore(
        job,
        RestoreSource::Upload {
            path: upload.clone(),
            sha256: None,
        },
    ));
    let err = match result {
        Err(e @ SnapshotError::Rejected(_)) => e.to_string(),
        other => panic!("{case}: expected a rejection, got {other:?}"),
    };
    assert!(
        err.contains(reason),
        "{case}: {err:?} does not mention {reason:?}"
    );
    assert_eq!(fingerprint(&store), before, "{case}: store changed");
    assert_eq!(
        fingerprint(&f.outside),
        outside_before,
        "{case}: outside changed"
    );
    let mut root_after = fingerprint(f.e.root());
    root_after.retain(|k, _| !k.starts_with("snapshots"));
    let mut root_before = root_before;
    root_before.retain(|k, _| !k.starts_with("snapshots"));
    assert_eq!(
        root_after, root_before,
        "{case}: something appeared under the root"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".cfy-snapshot-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "{case}: staging left behind: {leftovers:?}"
    );
    assert!(!upload.exists(), "{case}: upload not removed");
    assert!(
        !Path::new("/tmp/cfy-pwned").exists(),
        "{case}: wrote to /tmp"
    );
}

#[test]
fn hostile_members_are_refused() {
    let f = fixture("");
    // Links pointing anywhere, a hard link and a FIFO are what a real store holds.
    let ok = || {
        vec![
            dir("store/d"),
            file("store/d/x", b"x"),
            link("store/d/h", "store/d/x", tar::EntryType::Link),
            link(
                "store/machine-id",
                "/etc/machine-id",
                tar::EntryType::Symlink,
            ),
            link("store/up", "../../outside/keep", tar::EntryType::Symlink),
            link("store/dangling", "no/such/file", tar::EntryType::Symlink),
            Member {
                name: b"store/fifo".to_vec(),
                kind: tar::EntryType::Fifo,
                data: vec![],
                link: None,
            },
        ]
    };
    let cases: Vec<(&str, Vec<Member>, &str)> = vec![
        (
            "traversal",
            vec![file("store/../../outside/pwned", b"p")],
            "contains '..'",
        ),
        (
            "traversal-deep",
            vec![dir("store/d"), file("store/d/../../../outside/pwned", b"p")],
            "contains '..'",
        ),
        (
            "absolute",
            vec![file("/tmp/cfy-pwned", b"p")],
            "outside store/",
        ),
        (
            "absolute-in-store",
            vec![file("store//tmp/cfy-pwned", b"p")],
            "absolute path",
        ),
        ("bare-name", vec![file("pwned", b"p")], "outside store/"),
        (
            "symlink-absolute-then-file-through-it",
            vec![
                link("store/l", "/tmp", tar::EntryType::Symlink),
                file("store/l/cfy-pwned", b"p"),
            ],
            "below the symlink",
        ),
        (
            "link-chain-leaving-the-store",
            vec![
                link("store/l1", "l2", tar::EntryType::Symlink),
                link("store/l2", "../../outside", tar::EntryType::Symlink),
                file("store/l1/pwned", b"p"),
            ],
            "below the symlink",
        ),
        (
            "symlink-then-write",
            vec![
                dir("store/d"),
                link("store/l", "d", tar::EntryType::Symlink),
                file("store/l/f", b"p"),
            ],
            "below the symlink",
        ),
        (
            "symlink-replacing-a-directory-already-written",
            vec![
                file("store/d/f", b"p"),
                link("store/d", "/tmp", tar::EntryType::Symlink),
            ],
            "replaces an entry already written",
        ),
        (
            "symlink-replacing-a-listed-directory",
            vec![
                dir("store/d"),
                file("store/d/f", b"p"),
                link("store/d", "/tmp", tar::EntryType::Symlink),
            ],
            "duplicate path",
        ),
        (
            "hardlink-out-of-the-store",
            vec![link("store/h", "../../outside/keep", tar::EntryType::Link)],
            "hard link target outside store/",
        ),
        (
            "hardlink-to-a-symlink",
            vec![
                link("store/l", "/tmp/cfy-pwned", tar::EntryType::Symlink),
                link("store/h", "store/l", tar::EntryType::Link),
            ],
            "not a regular file",
        ),
        (
            "hardlink-to-a-later-file",
            vec![
                link("store/h", "store/f", tar::EntryType::Link),
                file("store/f", b"f"),
            ],
            "not a regular file",
        ),
        (
            "reserved-journal",
            vec![file("store/.cfy-snapshot-journal", b"in\n")],
            "reserved",
        ),
        (
            "reserved-rollback",
            vec![
                dir("store/.cfy-snapshot-rollback"),
                file("store/.cfy-snapshot-rollback/etc", b"x"),
            ],
            "reserved",
        ),
        ("dot-name", vec![file("store/./a", b"p")], "contains '.'"),
        (
            "dot-inside",
            vec![dir("store/d"), file("store/d/./a", b"p")],
            "contains '.'",
        ),
        (
            "double-slash",
            vec![dir("store/d"), file("store/d//a", b"p")],
            "'//'",
        ),
        (
            "name-too-long",
            vec![file(&format!("store/{}", "n".repeat(300)), b"p")],
            "over the limit of 255",
        ),
        (
            "char-device",
            vec![Member {
                name: b"store/null".to_vec(),
                kind: tar::EntryType::Char,
                data: vec![],
                link: None,
            }],
            "not allowed",
        ),
        (
            "block-device",
            vec![Member {
                name: b"store/sda".to_vec(),
                kind: tar::EntryType::Block,
                data: vec![],
                link: None,
            }],
            "not allowed",
        ),
        (
            "duplicate",
            vec![file("store/a", b"1"), file("store/a", b"2")],
            "duplicate path",
        ),
        (
            "file-then-child",
            vec![file("store/a", b"1"), file("store/a/b", b"2")],
            "below the non-directory",
        ),
    ];
    for (case, members, reason) in cases {
        let bytes = build(&members, None);
        assert_rejected(&f, case, &bytes, reason);
    }
    // Sanity: the harmless version of the same construction is accepted.
    let bytes = build(&ok(), None);
    let upload = f.e.archives().join("upload-ok");
    std::fs::write(&upload, bytes).unwrap();
    let job = f.engine.begin_restore().unwrap();
    common::runtime()
        .block_on(f.engine.run_restore(
            job,
            RestoreSource::Upload {
                path: upload,
                sha256: None,
            },
        ))
        .unwrap();
    let store = f.e.store();
    assert_eq!(std::fs::read_to_string(store.join("d/x")).unwrap(), "x");
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let (x, h) = (
        std::fs::metadata(store.join("d/x")).unwrap(),
        std::fs::symlink_metadata(store.join("d/h")).unwrap(),
    );
    assert_eq!(
        (x.ino(), x.nlink()),
        (h.ino(), 2),
        "a hard link, not a copy"
    );
    for (l, t) in [
        ("machine-id", "/etc/machine-id"),
        ("up", "../../outside/keep"),
        ("dangling", "no/such/file"),
    ] {
        assert_eq!(
            std::fs::read_link(store.join(l)).unwrap(),
            Path::new(t),
            "{l} restored as a link"
        );
    }
    assert!(std::fs::symlink_metadata(store.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn broken_archives_are_refused() {
    let f = fixture("");
    let members = vec![
        dir("store/d"),
        file("store/d/x", &vec![7u8; 200_000]),
        file("store/y", b"hello"),
    ];
    let good = build(&members, None);

    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    assert_rejected(&f, "truncated", &truncated, "archive rejected");
    let mut cut_end = good.clone();
    cut_end.truncate(good.len() - 6);
    assert_rejected(&f, "truncated-tail", &cut_end, "archive rejected");

    for at in [good.len() / 3, good.len() / 2, good.len() - 10] {
        let mut flipped = good.clone();
        flipped[at] ^= 0x20;
        assert_rejected(&f, &format!("flipped-{at}"), &flipped, "archive rejected");
    }
    assert_rejected(
        &f,
        "not-zstd",
        b"this is not an archive at all",
        "archive rejected",
    );
    assert_rejected(
        &f,
        "empty-tar",
        &zstd::encode_all(&[0u8; 1024][..], 3).unwrap(),
        "no manifest",
    );

    // Manifest lies: wrong hash, missing entry, extra entry, unknown format.
    let mut m: Vec<_> = members.iter().map(manifest_entry).collect();
    m[2]["sha256"] = hex::encode(sha2::Sha256::digest(b"other")).into();
    let doc = |entries: Vec<serde_json::Value>| serde_json::json!({"format": 1, "created": "x", "entries": entries, "total_bytes": 0});
    assert_rejected(
        &f,
        "hash-mismatch",
        &build(&members, Some(doc(m))),
        "does not match the manifest",
    );
    let m: Vec<_> = members.iter().take(2).map(manifest_entry).collect();
    assert_rejected(
        &f,
        "unlisted-member",
        &build(&members, Some(doc(m))),
        "manifest lists 2 entries, archive holds 3",
    );
    let mut m: Vec<_> = members.iter().map(manifest_entry).collect();
    m.push(serde_json::json!({"path": "ghost", "type": "file", "mode": 420, "uid": 0, "gid": 0, "size": 0, "mtime": 0}));
    assert_rejected(
        &f,
        "missing-member",
        &build(&members, Some(doc(m))),
        "manifest lists 4 entries",
    );
    let mut d = doc(members.iter().map(manifest_entry).collect());
    d["format"] = 99.into();
    assert_rejected(
        &f,
        "future-format",
        &build(&members, Some(d)),
        "unknown archive format",
    );

    // A member after the manifest.
    let mut tar = tar::Builder::new(Vec::new());
    let json = serde_json::to_vec(&doc(vec![])).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(json.len() as u64);
    h.set_cksum();
    tar.append_data(&mut h, "manifest.json", json.as_slice())
        .unwrap();
    tar.append(&header(&file("store/late", b"x")), &b"x"[..])
        .unwrap();
    let late = zstd::encode_all(tar.into_inner().unwrap().as_slice(), 3).unwrap();
    assert_rejected(&f, "after-manifest", &late, "members after the manifest");
}

#[test]
fn decompression_bomb_stops_at_the_limit() {
    // 16 MiB total allowed; the bomb expands to 96 MiB of zeros but is tiny compressed.
    let f = fixture("limits:\n  max_total_bytes: 16777216\n  max_file_bytes: 8388608");
    let zeros = vec![0u8; 8 << 20];
    let members: Vec<Member> = (0..12)
        .map(|i| file(&format!("store/z{i}"), &zeros))
        .collect();
    let bomb = build(&members, None);
    assert!(bomb.len() < 64 * 1024, "the bomb is small: {}", bomb.len());
    assert_rejected(&f, "bomb-total", &bomb, "decompression bomb");
    // One member whose header claims more than the per-file limit is refused before any byte.
    let big = vec![file("store/huge", &vec![0u8; (8 << 20) + 1])];
    assert_rejected(&f, "bomb-file", &build(&big, None), "over the limit");
}

#[test]
fn tampered_stored_snapshot_fails_its_checksum() {
    let f = fixture("");
    let rt = common::runtime();
    let job = f.engine.begin_snapshot().unwrap();
    let meta = rt.block_on(f.engine.run_snapshot(job)).unwrap();
    // Replace the stored archive with a valid but different one: the manifest is fine, the
    // whole-file checksum recorded at creation is not.
    let other = build(&[file("store/other", b"o")], None);
    std::fs::write(f.engine.archive_path(&meta.id).unwrap(), other).unwrap();
    let before = fingerprint(&f.e.store());
    let job = f.engine.begin_restore().unwrap();
    let err = rt
        .block_on(
            f.engine
                .run_restore(job, RestoreSource::Id(meta.id.clone())),
        )
        .unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert_eq!(fingerprint(&f.e.store()), before);
}
