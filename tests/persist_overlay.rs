//! The image directories live on overlayfs, as in Docker (overlay2) and containerd: a
//! directory of a lower layer cannot be renamed (EXDEV), so moving it to `<dir>-initial`
//! falls back to copy-then-remove. Tested on a real overlay mount (redirect_dir=off, like
//! Docker's) in a private mount namespace, with a separate store as the volume, and with
//! `cfy-init persist` killed at fault points spread over the whole boot.

#[path = "common/persist.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// The image as a read-only lower layer, plus one container's upper layer and volume.
struct Container {
    base: PathBuf,
    merged: PathBuf,
}

impl Container {
    /// Mount a fresh container root over `lower`, with an empty volume at /cfy-persist.
    fn new(base: &Path, lower: &Path, n: u64) -> Container {
        let base = base.join(format!("c{n}"));
        let (upper, work, merged, volume) = (
            base.join("upper"),
            base.join("work"),
            base.join("merged"),
            base.join("volume"),
        );
        for d in [&upper, &work, &merged, &volume] {
            fs::create_dir_all(d).unwrap();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off",
            lower.display(),
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .expect("mount overlay");
        let store = merged.join("cfy-persist");
        fs::create_dir_all(&store).unwrap();
        mount(
            Some(&volume),
            &store,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind the volume");
        Container { base, merged }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = umount2(&self.merged.join("cfy-persist"), MntFlags::MNT_DETACH);
        let _ = umount2(&self.merged, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// Give this test thread (and the processes it starts) its own mount namespace.
fn private_mounts() {
    unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS): the tests run as root");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
}

#[test]
fn image_directories_on_overlayfs_are_linked_and_a_kill_anywhere_converges() {
    private_mounts();
    // On disk, not tmpfs: overlay's upper layer needs trusted xattrs, which both have, but
    // a disk is what Docker uses.
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("image");
    generate(&lower, Spec::tiny(23));

    // A clean boot: everything moved aside by copy (EXDEV), linked, store equal to image.
    let reference = Container::new(tmp.path(), &lower, 0);
    // The image as the container sees it (overlayfs hides its own `trusted.overlay.*`
    // attributes, which the generator also sets).
    // Sockets are not copied (nothing listens on them after a restart), so when `-initial`
    // is made by copying it holds everything but them.
    let mut image = snapshot_dirs(&reference.merged);
    let mut sockets = 0;
    for snap in image.values_mut() {
        let before = snap.len();
        snap.retain(|_, e| e.kind != "socket");
        sockets += before - snap.len();
    }
    assert!(sockets > 0, "the generated image has sockets");
    let count = tmp.path().join("fault-count");
    let out = cfy_init(
        &reference.merged,
        &["persist"],
        &[("CFY_INIT_FAULT_COUNT", count.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("copied to -initial (overlay file system)"),
        "the EXDEV fallback was not exercised: {}",
        text(&out)
    );
    verify_linked(&reference.merged, &image).unwrap();
    let again = cfy_init(&reference.merged, &["persist"], &[]);
    assert!(again.status.success(), "{}", text(&again));
    verify_linked(&reference.merged, &image).unwrap();
    drop(reference);

    // Killed at fault points spread over the whole boot (about 60 of them), then booted
    // again: the same result every time.
    let points: u64 = fs::read_to_string(&count).unwrap().parse().unwrap();
    let stride = (points / 60).max(1);
    let mut failures = Vec::new();
    for point in (1..=points).step_by(stride as usize) {
        let c = Container::new(tmp.path(), &lower, point);
        let crashed = cfy_init(
            &c.merged,
            &["persist"],
            &[("CFY_INIT_FAULT_AT", &point.to_string())],
        );
        assert!(
            !crashed.status.success(),
            "fault point {point} did not fire"
        );
        let out = cfy_init(&c.merged, &["persist"], &[]);
        let outcome = if out.status.success() {
            verify_linked(&c.merged, &image)
        } else {
            Err(format!("recovery boot failed: {}", text(&out)))
        };
        if let Err(why) = outcome {
            failures.push(format!("fault point {point}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} inconsistent outcomes:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
