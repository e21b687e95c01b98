//! A snapshot that runs out of disk space, with either strategy (`precopy` or a paused full
//! copy): the error names the archive, the bytes it needs at least and the bytes free (one
//! line, 507 from the hooks API), the partial archive is removed, the staging copy is
//! removed, the post command (service restart) ran, the store keeps its data, and a later
//! snapshot with space works.

#[path = "common/hooks.rs"]
mod common;

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use cfy_init::hooks::NoServices;
use cfy_init::snapshot::{Engine, RestoreSource, SnapshotError};
use common::{env, fingerprint, populate, request, wait_ready, Init};
use hyper::{Method, StatusCode};

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// 4 MiB of incompressible data: more than the 2 MiB archive directory holds (the
/// populated store alone compresses to about 0.8 MiB).
fn write_noise(path: &std::path::Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let noise: Vec<u8> = (0..4 << 20).map(|_| rand::random::<u8>()).collect();
    f.write_all(&noise).unwrap();
}

/// Mount a 2 MiB tmpfs on `dir` (made if missing); unmounted on drop.
fn small_disk(dir: &std::path::Path) -> Tmpfs {
    tmpfs(dir, "size=2m")
}

/// Mount a tmpfs with `options` on `dir` (made if missing); unmounted on drop.
fn tmpfs(dir: &std::path::Path, options: &str) -> Tmpfs {
    std::fs::create_dir_all(dir).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(options),
    )
    .unwrap();
    Tmpfs(dir.to_path_buf())
}

/// `PATH: no free inodes left on the device: at least N files needed, F free; ...` ->
/// (N, F), checked to be one line naming the fix.
fn parse_no_inodes(msg: &str, path: &std::path::Path) -> (u64, u64) {
    assert!(!msg.contains('\n'), "{msg:?}");
    parse_out_of_room(
        msg,
        path,
        "no free inodes left on the device",
        "files",
        " free; remove files there or give the file system more inodes",
    )
}

/// `PATH: WHAT: at least N UNIT needed, F TAIL` -> (N, F), or a panic naming `path`.
fn parse_out_of_room(
    msg: &str,
    path: &std::path::Path,
    what: &str,
    unit: &str,
    tail: &str,
) -> (u64, u64) {
    let rest = msg
        .strip_prefix(&format!("{}: {what}: at least ", path.display()))
        .unwrap_or_else(|| panic!("not a {what:?} error on {}: {msg}", path.display()));
    let (needed, rest) = rest.split_once(&format!(" {unit} needed, ")).expect(msg);
    let free = rest.strip_suffix(tail).expect(msg);
    (needed.parse().expect(msg), free.parse().expect(msg))
}

/// Names in `dir` that cfy-init's staging or partial files use.
fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".cfy-snapshot-") || n.ends_with(".partial"))
        .collect()
}

/// An archive directory with room but no free inode: the archive cannot even be created.
/// The error says it is the inodes, names the partial archive, 1 needed and 0 free; a 507
/// through the API mapping; nothing left behind; with an inode free again it works.
#[test]
fn archive_directory_out_of_inodes_says_so() {
    let e = env("precopy: true\nquiesce:\n  services: []");
    populate(&e.store());
    let before = fingerprint(&e.store());
    // tmpfs counts its root directory: one inode in all, none free.
    let guard = tmpfs(&e.archives(), "size=64m,nr_inodes=1");
    let engine = Engine::new(&e.ctx, Arc::new(NoServices));
    let rt = common::runtime();
    let job = engine.begin_snapshot().unwrap();
    let partial = e.archives().join(format!(".{}.tar.zst.partial", job.id));
    let err = rt.block_on(engine.run_snapshot(job)).unwrap_err();
    assert!(matches!(err, SnapshotError::NoInodes { .. }), "{err}");
    assert_eq!(parse_no_inodes(&err.to_string(), &partial), (1, 0));
    assert!(leftovers(&e.archives()).is_empty());
    assert_eq!(fingerprint(&e.store()), before);
    drop(guard);
    let meta = rt
        .block_on(engine.run_snapshot(engine.begin_snapshot().unwrap()))
        .unwrap();
    assert_eq!(engine.list()[0].id, meta.id);
}

/// The paused copy (`precopy: false`) on a store's file system with bytes to spare but too
/// few inodes for a second copy of its entries: the error says it is the inodes, names the
/// staging directory, the entries a copy needs and the inodes free once it is removed; the
/// store as it was. A restore of an archive with more entries than free inodes is refused
/// the same way, naming the store, before anything is written.
#[test]
fn store_out_of_inodes_for_the_copy_or_a_restore_says_so() {
    let e = env("precopy: false\nquiesce:\n  services: []\n  post: [[touch, \"{store}/../post\"]]");
    // 41 entries and the root directory: 42 of 60 inodes used.
    let _guard = tmpfs(&e.store(), "size=64m,nr_inodes=60");
    fill(&e.store());
    let before = fingerprint(&e.store());
    let engine = Engine::new(&e.ctx, Arc::new(NoServices));
    let rt = common::runtime();
    let job = engine.begin_snapshot().unwrap();
    let staged = e.store().join(format!(".cfy-snapshot-copy-{}", job.id));
    let err = rt.block_on(engine.run_snapshot(job)).unwrap_err();
    assert!(matches!(err, SnapshotError::NoInodes { .. }), "{err}");
    let (needed, free) = parse_no_inodes(&err.to_string(), &staged);
    assert_eq!((needed, free), (41, 60 - 42), "{err}");
    assert!(!staged.exists() && leftovers(&e.store()).is_empty());
    assert!(e.root().join("post").exists());
    assert_eq!(fingerprint(&e.store()), before);

    // The same tree archived elsewhere (on a disk with inodes to spare), then restored
    // onto this store, which has fewer inodes free than the archive has entries.
    let other = env("precopy: true\nquiesce:\n  services: []");
    fill(&other.store());
    let other_engine = Engine::new(&other.ctx, Arc::new(NoServices));
    let meta = rt
        .block_on(other_engine.run_snapshot(other_engine.begin_snapshot().unwrap()))
        .unwrap();
    for ext in ["tar.zst", "json"] {
        let name = format!("{}.{ext}", meta.id);
        std::fs::copy(other.archives().join(&name), e.archives().join(&name)).unwrap();
    }
    let job = engine.begin_restore().unwrap();
    let err = rt
        .block_on(engine.run_restore(job, RestoreSource::Id(meta.id.clone())))
        .unwrap_err();
    assert!(matches!(err, SnapshotError::NoInodes { .. }), "{err}");
    let (needed, free) = parse_no_inodes(&err.to_string(), &e.store());
    assert_eq!((needed, free), (meta.entries as u64, 60 - 42), "{err}");
    assert_eq!(fingerprint(&e.store()), before);
    assert!(leftovers(&e.store()).is_empty());
}

/// `populate`'s 11 entries and 30 more: 41 in all.
fn fill(store: &std::path::Path) {
    populate(store);
    std::fs::create_dir(store.join("many")).unwrap();
    for i in 0..29 {
        std::fs::write(store.join(format!("many/{i}")), "x").unwrap();
    }
}

/// The out-of-space error of a snapshot of the 4 MiB noise into the 2 MiB archive
/// directory, checked whole: `path` (the partial archive), at least the noise's frame
/// needed, the empty 2 MiB free once the partial archive is gone; one line; no token.
fn check_no_space_message(msg: &str, path: &std::path::Path, token: &str) {
    let (needed, free) = parse_no_space(msg, path);
    assert!(needed >= 4 << 20, "needed {needed}: {msg}");
    assert!(free > 1 << 20 && free <= 2 << 20, "free {free}: {msg}");
    assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
    assert!(!msg.contains(token), "token in the message");
}

/// `PATH: no space left on the device: at least N bytes needed, F free` -> (N, F).
fn parse_no_space(msg: &str, path: &std::path::Path) -> (u64, u64) {
    parse_out_of_room(msg, path, "no space left on the device", "bytes", " free")
}

/// Run one snapshot into a 2 MiB archive directory and check that it fails cleanly:
/// out of space reported with the path and sizes, the quiesce undone (`pre` and `post` both ran), no partial archive, no
/// staging, the store as before but for what `added` names (checked by `check_added`);
/// then a snapshot with space works. `setup` runs on the populated store first.
fn full_disk_case(
    snapshot_yaml: &str,
    setup: impl Fn(&std::path::Path),
    added: &[&str],
    check_added: impl Fn(&std::path::Path),
) {
    let e = env(snapshot_yaml);
    populate(&e.store());
    setup(&e.store());
    let before = fingerprint(&e.store());
    let archives = e.archives();
    let guard = small_disk(&archives);

    let engine = Engine::new(&e.ctx, Arc::new(NoServices));
    let rt = common::runtime();
    let job = engine.begin_snapshot().unwrap();
    let partial = archives.join(format!(".{}.tar.zst.partial", job.id));
    let err = rt.block_on(engine.run_snapshot(job)).unwrap_err();
    assert!(matches!(err, SnapshotError::NoSpace { .. }), "{err}");
    let err = err.to_string();
    check_no_space_message(&err, &partial, &e.token);
    assert!(
        e.root().join("pre").exists() && e.root().join("post").exists(),
        "quiesce undone: pre {} post {}: {err}",
        e.root().join("pre").exists(),
        e.root().join("post").exists()
    );
    let left: Vec<_> = std::fs::read_dir(&archives).unwrap().collect();
    assert!(left.is_empty(), "partial archive left: {left:?}");
    let staging: Vec<_> = std::fs::read_dir(e.store())
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".cfy-snapshot-"))
        .collect();
    assert!(staging.is_empty(), "{staging:?}");
    check_added(&e.store());
    let mut after = fingerprint(&e.store());
    for name in added {
        after.remove(*name);
    }
    assert_eq!(after, before);
    let jobs = engine.jobs.list();
    assert_eq!(jobs[0].state, cfy_init::snapshot::JobState::Failed);
    assert!(engine.list().is_empty());

    // With space again, the same snapshot works.
    drop(guard);
    let job = engine.begin_snapshot().unwrap();
    let meta = rt.block_on(engine.run_snapshot(job)).unwrap();
    assert_eq!(engine.list()[0].id, meta.id);
}

/// Full copy while paused, then the archive fills the disk after the services resumed.
#[test]
fn full_disk_after_a_paused_copy_leaves_nothing_behind() {
    full_disk_case(
        "precopy: false\nquiesce:\n  services: []\n  pre: [[touch, \"{store}/../pre\"]]\n  post: [[touch, \"{store}/../post\"]]",
        |store| write_noise(&store.join("random.bin")),
        &[],
        |_| {},
    );
}

/// Live archive: the pre command (run after the first pass) writes what then fills the
/// disk in the catch-up pass; the post command still runs and the store keeps its data.
#[test]
fn full_disk_in_a_live_catch_up_pass_leaves_nothing_behind() {
    let noise = tempfile::NamedTempFile::new().unwrap();
    write_noise(noise.path());
    let yaml = format!(
        "quiesce:\n  services: []\n  pre: [[sh, -c, \"cp {} {{store}}/random.bin && touch {{store}}/../pre\"]]\n  post: [[touch, \"{{store}}/../post\"]]",
        noise.path().display()
    );
    full_disk_case(
        &yaml,
        |_| {},
        &["random.bin"],
        |store| {
            let got = std::fs::read(store.join("random.bin")).unwrap();
            assert_eq!(got, std::fs::read(noise.path()).unwrap());
        },
    );
}

/// The paused full copy (`precopy: false`) into a staging directory beside the store, on a
/// store's disk without room for it: the error names the staging directory, the room a
/// copy of the store takes and what the store's disk has free; the staging copy is gone, the
/// store as it was, the post command ran.
#[test]
fn full_store_disk_for_the_paused_copy_says_what_is_needed() {
    let e = env("precopy: false\nquiesce:\n  services: []\n  post: [[touch, \"{store}/../post\"]]");
    let _guard = small_disk(&e.store());
    // About 1.3 MiB of data on a 2 MiB disk: a second copy does not fit.
    let noise: Vec<u8> = (0..1300 << 10).map(|_| rand::random::<u8>()).collect();
    std::fs::write(e.store().join("noise.bin"), &noise).unwrap();
    std::fs::write(e.store().join("small"), "small").unwrap();
    let before = fingerprint(&e.store());
    let engine = Engine::new(&e.ctx, Arc::new(NoServices));
    let rt = common::runtime();
    let job = engine.begin_snapshot().unwrap();
    let staged = e.store().join(format!(".cfy-snapshot-copy-{}", job.id));
    let err = rt.block_on(engine.run_snapshot(job)).unwrap_err();
    assert!(matches!(err, SnapshotError::NoSpace { .. }), "{err}");
    let msg = err.to_string();
    let (needed, free) = parse_no_space(&msg, &staged);
    assert!(needed >= 1300 << 10, "needed {needed}: {msg}");
    assert!(free < needed && free > 256 << 10, "free {free}: {msg}");
    assert!(!msg.contains('\n') && !msg.contains(&e.token), "{msg:?}");
    assert!(!staged.exists());
    assert!(e.root().join("post").exists());
    assert_eq!(fingerprint(&e.store()), before);
    assert!(std::fs::read_dir(e.archives()).unwrap().next().is_none());
}

/// A restore onto a store without room for the archive's tree: the error names the path,
/// the bytes needed and the bytes free (for a stored snapshot before anything is written,
/// for an upload as the extraction hits the limit); the store is as it was, no staging left.
#[test]
fn restore_onto_a_full_disk_says_what_is_needed() {
    let e = env("");
    populate(&e.store());
    write_noise(&e.store().join("random.bin"));
    let engine = Engine::new(&e.ctx, Arc::new(NoServices));
    let rt = common::runtime();
    let meta = rt
        .block_on(engine.run_snapshot(engine.begin_snapshot().unwrap()))
        .unwrap();
    // The store becomes a 2 MiB file system holding one small file.
    nix::mount::mount(
        Some("tmpfs"),
        &e.store(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=2m"),
    )
    .unwrap();
    let _guard = Tmpfs(e.store());
    std::fs::write(e.store().join("kept"), "kept").unwrap();
    let before = fingerprint(&e.store());
    let check = |err: cfy_init::snapshot::SnapshotError| {
        let msg = err.to_string();
        assert!(
            matches!(err, cfy_init::snapshot::SnapshotError::NoSpace { .. }),
            "{msg}"
        );
        assert!(msg.contains("no space left on the device"), "{msg}");
        assert!(msg.contains(&e.store().display().to_string()), "{msg}");
        assert!(
            msg.contains("bytes needed") && msg.contains("free"),
            "{msg}"
        );
        assert_eq!(fingerprint(&e.store()), before, "store changed");
        let staging: Vec<_> = std::fs::read_dir(e.store())
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".cfy-snapshot-"))
            .collect();
        assert!(staging.is_empty(), "{staging:?}");
    };
    let job = engine.begin_restore().unwrap();
    check(
        rt.block_on(engine.run_restore(job, RestoreSource::Id(meta.id.clone())))
            .unwrap_err(),
    );
    let upload = e.archives().join("upload.tar.zst");
    std::fs::copy(engine.archive_path(&meta.id).unwrap(), &upload).unwrap();
    let job = engine.begin_restore().unwrap();
    check(
        rt.block_on(engine.run_restore(
            job,
            RestoreSource::Upload {
                path: upload,
                sha256: None,
            },
        ))
        .unwrap_err(),
    );
}

/// Through the real init: `POST /snapshots?wait=true` onto a full archive disk answers 507
/// with the one-line message, `cfy-init snapshot create` prints it and fails, the failed
/// job records it, and nothing is left in the archive directory or the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_onto_a_full_disk_answers_507_over_http() {
    // No service is supervised here: ready means the boot steps are done.
    let e = common::env_with("", "supervise:\n  ready_without_services: true\n");
    populate(&e.store());
    write_noise(&e.store().join("random.bin"));
    let _guard = small_disk(&e.archives());
    let init = Init::start(&e);
    let to = init.to();
    wait_ready(&to, std::time::Duration::from_secs(30)).await;
    // After the boot, which records its own state in the store.
    let before = fingerprint(&e.store());

    let r = request(
        &to,
        Method::POST,
        "/snapshots?wait=true",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{:?}", r.body);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    let file = msg.split(": ").next().unwrap();
    let name = std::path::Path::new(file)
        .file_name()
        .unwrap()
        .to_string_lossy();
    assert!(
        name.starts_with('.') && name.ends_with(".tar.zst.partial"),
        "{msg}"
    );
    check_no_space_message(&msg, &e.archives().join(&*name), &e.token);

    let out = tokio::task::block_in_place(|| init.cli(&["snapshot", "create"]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("no space left on the device"))
        .unwrap_or_else(|| panic!("{stderr}"));
    // `cfy-init: 507 Insufficient Storage: MESSAGE`
    let at = line.find(&e.archives().display().to_string()).expect(line);
    let msg = &line[at..];
    let file = std::path::PathBuf::from(msg.split(": ").next().unwrap());
    check_no_space_message(msg, &file, &e.token);
    assert!(!stderr.contains(&e.token), "token on stderr");

    let left: Vec<_> = std::fs::read_dir(e.archives()).unwrap().collect();
    assert!(left.is_empty(), "left in the archive directory: {left:?}");
    assert_eq!(fingerprint(&e.store()), before);
    let staging: Vec<_> = std::fs::read_dir(e.store())
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".cfy-snapshot-"))
        .collect();
    assert!(staging.is_empty(), "{staging:?}");
}
