//! A snapshot that runs out of disk space: the error says so, the partial archive is
//! removed, the staging copy is removed, the post command (service restart) ran, the store
//! is unchanged, and a later snapshot with space works.

#[path = "common/hooks.rs"]
mod common;

use std::io::Write;
use std::sync::Arc;

use cfy_init::hooks::NoServices;
use cfy_init::snapshot::Engine;
use common::{env, fingerprint, populate};

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn full_disk_leaves_nothing_behind() {
    let e = env("quiesce:\n  services: []\n  pre: [[touch, \"{store}/../pre\"]]\n  post: [[touch, \"{store}/../post\"]]");
    populate(&e.store());
    // 4 MiB of incompressible data for a 512 KiB archive directory.
    let mut f = std::fs::File::create(e.store().join("random.bin")).unwrap();
    let noise: Vec<u8> = (0..4 << 20).map(|_| rand::random::<u8>()).collect();
    f.write_all(&noise).unwrap();
    drop(f);
    let archives = e.archives();
    std::fs::create_dir_all(&archives).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &archives,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=512k"),
    )
    .unwrap();
    let guard = Tmpfs(archives.clone());
    let before = fingerprint(&e.store());

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
        "quiesce undone"
    );
    let left: Vec<_> = std::fs::read_dir(&archives).unwrap().collect();
    assert!(left.is_empty(), "partial archive left: {left:?}");
    let staging: Vec<_> = std::fs::read_dir(e.store())
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".cfy-snapshot-"))
        .collect();
    assert!(staging.is_empty(), "{staging:?}");
    assert_eq!(fingerprint(&e.store()), before);
    let jobs = engine.jobs.list();
    assert_eq!(jobs[0].state, cfy_init::snapshot::JobState::Failed);
    assert!(engine.list().is_empty());

    // With space again, the same snapshot works.
    drop(guard);
    let job = engine.begin_snapshot().unwrap();
    let meta = rt.block_on(engine.run_snapshot(job)).unwrap();
    assert_eq!(engine.list()[0].id, meta.id);
}

#[test]
fn failing_pre_command_aborts_and_runs_post() {
    let e = env("quiesce:\n  services: []\n  pre: [[/bin/sh, -c, \"echo cannot checkpoint >&2; exit 3\"]]\n  post: [[touch, \"{store}/../post\"]]");
    populate(&e.store());
    let engine = Engine::new(&e.ctx, Arc::new(NoServices));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let job = engine.begin_snapshot().unwrap();
    let err = rt
        .block_on(engine.run_snapshot(job))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot checkpoint"), "{err}");
    assert!(e.root().join("post").exists());
    assert!(engine.list().is_empty());
}
