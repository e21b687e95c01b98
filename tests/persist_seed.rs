//! Seeding generated Cloudify-shaped trees: content and metadata kept, restarts and pod
//! re-creations converge on the same layout, `add-missing` on a new image, no store,
//! `lost+found`, and bind mounts (inside a private mount namespace).

#[path = "common/persist.rs"]
mod common;

use std::fs;
use std::path::Path;

use common::*;

fn state(root: &Path) -> serde_json::Value {
    let text = fs::read(root.join("cfy-persist/.cfy-init/state.json")).unwrap();
    serde_json::from_slice(&text).unwrap()
}

#[test]
fn seeding_keeps_content_and_metadata_of_every_entry() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::medium(7));
    fs::create_dir(root.join("cfy-persist")).unwrap();
    let image = snapshot_dirs(root);
    assert!(
        image["var/lib"].values().any(|e| e.sparse),
        "the generator made sparse files"
    );
    assert!(image["opt/manager"].values().any(|e| e.kind == "socket"));
    let out = cfy_init(root, &["persist"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    verify_linked(root, &image).unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("empty store: seeding it from the image"),
        "{log}"
    );
    assert!(log.contains("api.sock: socket skipped"), "{log}");
    let st = state(root);
    assert_eq!(st["first_seed_pending"], true);
    assert_eq!(st["legacy"], false);
    for d in DIRS {
        assert_eq!(
            st["directories"][format!("/{d}")]["origin"],
            "seeded",
            "{st}"
        );
    }
}

#[test]
fn seeding_the_same_tree_on_a_plain_disk_file_system_keeps_metadata() {
    // Same as above, on the disk file system (ext4 here) rather than tmpfs: different
    // copy paths (copy_file_range, SEEK_DATA) are exercised.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    generate(root, Spec::small(8));
    fs::create_dir(root.join("cfy-persist")).unwrap();
    let image = snapshot_dirs(root);
    let out = cfy_init(root, &["persist"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    verify_linked(root, &image).unwrap();
}

#[test]
fn a_store_with_only_lost_and_found_counts_as_empty() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::small(1));
    fs::create_dir_all(root.join("cfy-persist/lost+found")).unwrap();
    let image = snapshot_dirs(root);
    let out = cfy_init(root, &["persist"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    verify_linked(root, &image).unwrap();
    assert_eq!(state(root)["legacy"], false);
    assert!(
        root.join("cfy-persist/lost+found").is_dir(),
        "lost+found is left alone"
    );
}

/// Everything but the times of the entries a link step necessarily rewrites on a fresh
/// image: the links themselves and the directories holding them.
fn without_link_times(
    mut l: std::collections::BTreeMap<std::path::PathBuf, Entry>,
) -> std::collections::BTreeMap<std::path::PathBuf, Entry> {
    for (p, e) in l.iter_mut() {
        let holds_links = ["", "var", "etc", "opt"].iter().any(|d| p == Path::new(d));
        if holds_links || e.kind == "symlink" && DIRS.iter().any(|d| p == Path::new(d)) {
            e.mtime = (0, 0);
        }
    }
    l
}

#[test]
fn twenty_restarts_and_pod_recreations_give_the_same_layout() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::small(3));
    fs::create_dir(root.join("cfy-persist")).unwrap();
    let image = snapshot_dirs(root);
    let out = cfy_init(root, &["persist"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    // The manager writes into the store through the link.
    fs::write(
        root.join("var/lib/pgsql/9.5/data/written-by-manager"),
        "row",
    )
    .unwrap();
    let first = layout(root);
    for boot in 2..=20 {
        let out = cfy_init(root, &["persist"], &[]);
        assert!(out.status.success(), "boot {boot}: {}", text(&out));
        assert_eq!(layout(root), first, "boot {boot} changed the layout");
    }
    let store_before = snapshot(&root.join("cfy-persist"));
    for recreation in 1..=3 {
        // A new pod: the image side is fresh, the store is the same volume.
        for d in DIRS {
            fs::remove_file(root.join(d)).unwrap();
            fs::remove_dir_all(root.join(format!("{d}-initial"))).unwrap();
        }
        let fresh = tempdir();
        generate(fresh.path(), Spec::small(3));
        for d in DIRS {
            fs::rename(fresh.path().join(d), root.join(d)).unwrap();
        }
        let out = cfy_init(root, &["persist"], &[]);
        assert!(
            out.status.success(),
            "re-creation {recreation}: {}",
            text(&out)
        );
        assert_eq!(
            without_link_times(layout(root)),
            without_link_times(first.clone()),
            "re-creation {recreation}"
        );
        assert_eq!(
            snapshot(&root.join("cfy-persist")),
            store_before,
            "the store was not touched"
        );
        assert_eq!(
            fs::read_to_string(root.join("var/lib/pgsql/9.5/data/written-by-manager")).unwrap(),
            "row"
        );
    }
    // The image side (-initial) still matches the image.
    for (d, snap) in &image {
        assert_eq!(&snapshot(&root.join(format!("{d}-initial"))), snap);
    }
}

#[test]
fn add_missing_copies_what_a_new_image_brings_and_never_overwrites() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::small(4));
    fs::create_dir(root.join("cfy-persist")).unwrap();
    let config = root.join("persist.yaml");
    let mut yaml = String::from("persist:\n  directories:\n");
    for d in DIRS {
        let mode = if *d == "opt/manager" {
            "add-missing"
        } else {
            "keep"
        };
        yaml.push_str(&format!("    - {{ path: /{d}, on_new_image: {mode} }}\n"));
    }
    fs::write(&config, yaml).unwrap();
    let cfg = config.to_str().unwrap();
    let out = cfy_init(
        root,
        &["--config", cfg, "persist"],
        &[("CFY_IMAGE_ID", "v1")],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        state(root)["directories"]["/opt/manager"]["image_id"],
        "env:v1"
    );
    // The running manager changed a file the image also has.
    fs::write(root.join("opt/manager/changed.conf"), "from the store").unwrap();
    // A new image: new files and directories in two persisted dirs, one changed file.
    for d in DIRS {
        fs::remove_file(root.join(d)).unwrap();
        fs::rename(root.join(format!("{d}-initial")), root.join(d)).unwrap();
    }
    fs::write(root.join("opt/manager/changed.conf"), "from the new image").unwrap();
    fs::create_dir_all(root.join("opt/manager/new/deeper")).unwrap();
    fs::write(root.join("opt/manager/new/deeper/plugin.yaml"), "new").unwrap();
    fs::write(root.join("opt/manager/side0/new-file"), "new").unwrap();
    fs::write(root.join("etc/cloudify/new-in-keep-dir"), "new").unwrap();
    let new_dir = snapshot(&root.join("opt/manager/new"));
    let out = cfy_init(
        root,
        &["--config", cfg, "persist"],
        &[("CFY_IMAGE_ID", "v2")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let store = root.join("cfy-persist");
    assert_eq!(
        fs::read_to_string(store.join("opt/manager/changed.conf")).unwrap(),
        "from the store"
    );
    assert_eq!(
        snapshot(&store.join("opt/manager/new")),
        new_dir,
        "new directory copied with metadata"
    );
    assert_eq!(
        fs::read_to_string(store.join("opt/manager/side0/new-file")).unwrap(),
        "new"
    );
    assert!(
        !store.join("etc/cloudify/new-in-keep-dir").exists(),
        "keep adds nothing"
    );
    let st = state(root);
    assert_eq!(st["directories"]["/opt/manager"]["image_id"], "env:v2");
    assert_eq!(st["directories"]["/etc/cloudify"]["image_id"], "env:v1");
    assert!(!store.join(".cfy-init/staging").exists());
    // Same image again: nothing to do, nothing changes.
    let before = snapshot(&store);
    let out = cfy_init(
        root,
        &["--config", cfg, "persist"],
        &[("CFY_IMAGE_ID", "v2")],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(snapshot(&store), before);
}

#[test]
fn without_a_store_the_boot_goes_on_unless_required() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::small(5));
    let image_side = layout(root);
    let out = cfy_init(root, &["persist"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        log.matches("no persistent storage available").count(),
        1,
        "{log}"
    );
    assert_eq!(layout(root), image_side, "nothing linked or moved");

    let config = root.join("required.yaml");
    fs::write(&config, "persist:\n  required: true\n").unwrap();
    let out = cfy_init(
        root,
        &["--config", config.to_str().unwrap(), "persist"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap();
    assert!(
        last.contains(&format!("{}/cfy-persist", root.display()))
            && last.contains("persist.required"),
        "{err}"
    );
}

#[test]
fn nested_directories_in_config_are_rejected() {
    let tmp = tempdir();
    let config = tmp.path().join("c.yaml");
    fs::write(
        &config,
        "persist:\n  directories:\n    - path: /opt\n    - path: /opt/manager\n",
    )
    .unwrap();
    let out = cfy_init(
        tmp.path(),
        &["config", "check", config.to_str().unwrap()],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/opt and /opt/manager overlap"), "{err}");
}

/// Run a shell script in a private mount namespace (so bind mounts vanish with it).
fn in_mount_ns(script: &str) -> std::process::Output {
    std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("CFY", env!("CARGO_BIN_EXE_cfy-init"))
        .env("NO_COLOR", "1")
        .env_remove("CFY_INIT_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn bind_mode_mounts_the_store_copy_and_needs_cap_sys_admin() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::small(6));
    fs::create_dir(root.join("cfy-persist")).unwrap();
    let config = root.join("bind.yaml");
    fs::write(&config, "persist:\n  link: bind\n").unwrap();
    let image = snapshot_dirs(root);
    let r = root.display();
    let c = config.display();
    let out = in_mount_ns(&format!(
        "setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin \"$CFY\" --root {r} --config {c} persist; echo rc=$?"
    ));
    let o = String::from_utf8_lossy(&out.stdout);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(o.contains("rc=2"), "{o}{e}");
    assert!(e.contains("CAP_SYS_ADMIN"), "{e}");
    let out = in_mount_ns(&format!(
        "\"$CFY\" --root {r} --config {c} persist && \"$CFY\" --root {r} --config {c} persist && \
         stat -c %i {r}/var/lib {r}/cfy-persist/var/lib && echo data > {r}/var/lib/through-mount"
    ));
    assert!(out.status.success(), "{}", text(&out));
    let ino: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(ino[0], ino[1], "/var/lib is the store copy");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("link=mounted") && e.contains("link=already-mounted"),
        "{e}"
    );
    assert_eq!(
        fs::read_to_string(root.join("cfy-persist/var/lib/through-mount")).unwrap(),
        "data\n"
    );
    // Outside the namespace the image directories are untouched (no -initial in bind mode).
    for (d, snap) in &image {
        assert_eq!(&snapshot(&root.join(d)), snap);
        assert!(!root.join(format!("{d}-initial")).exists());
    }
}

#[test]
fn a_second_cfy_init_on_the_same_store_waits_for_the_first() {
    use nix::fcntl::{Flock, FlockArg};
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::tiny(9));
    fs::create_dir_all(root.join("cfy-persist/.cfy-init")).unwrap();
    let lock_file = fs::File::create(root.join("cfy-persist/.cfy-init/lock")).unwrap();
    let held = Flock::lock(lock_file, FlockArg::LockExclusive).unwrap();
    let log = root.join("second.log");
    let mut child = command(root, &["persist"], &[])
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !fs::read_to_string(&log)
        .unwrap()
        .contains("another cfy-init is working on this store")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "never waited: {}",
            fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "it must wait for the lock"
    );
    assert!(
        !root.join("cfy-persist/var").exists(),
        "nothing copied while locked out"
    );
    drop(held);
    assert!(child.wait().unwrap().success());
    assert!(root.join("cfy-persist/var/lib").is_dir());
}
