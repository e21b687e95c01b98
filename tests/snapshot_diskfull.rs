//! A snapshot that runs out of disk space, with either strategy (`precopy` or a paused full
//! copy): the error says so, the partial archive is removed, the staging copy is removed,
//! the post command (service restart) ran, the store keeps its data, and a later snapshot
//! with space works.

#[path = "common/hooks.rs"]
mod common;

use std::io::Write;
use std::sync::Arc;

use cfy_init::hooks::NoServices;
use cfy_init::snapshot::{Engine, RestoreSource};
use common::{env, fingerprint, populate};

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

/// Run one snapshot into a 2 MiB archive directory and check that it fails cleanly:
/// ENOSPC reported, the quiesce undone (`pre` and `post` both ran), no partial archive, no
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
    std::fs::create_dir_all(&archives).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &archives,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=2m"),
    )
    .unwrap();
    let guard = Tmpfs(archives.clone());

    let engine = Engine::new(&e.ctx, Arc::new(NoServices));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let job = engine.begin_snapshot().unwrap();
    let err = rt
        .block_on(engine.run_snapshot(job))
        .unwrap_err()
        .to_string();
    assert!(err.contains("No space left on device"), "{err}");
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

/// A restore onto a store without room for the archive's tree: the error names the path,
/// the bytes needed and the bytes free (for a stored snapshot before anything is written,
/// for an upload as the extraction hits the limit); the store is as it was, no staging left.
#[test]
fn restore_onto_a_full_disk_says_what_is_needed() {
    let e = env("");
    populate(&e.store());
    write_noise(&e.store().join("random.bin"));
    let engine = Engine::new(&e.ctx, Arc::new(NoServices));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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
