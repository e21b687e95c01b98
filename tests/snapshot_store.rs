//! Snapshots of a store shaped like a real manager's (tests/common/store.rs): everything
//! comes back exactly (the listing and the manifest of a second snapshot are the same),
//! the venv's interpreter runs its package after the round trip, and archives are private.

#[path = "common/hooks.rs"]
mod common;
#[path = "common/store.rs"]
mod store;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::sync::Arc;

use cfy_init::hooks::NoServices;
use cfy_init::snapshot::{Engine, RestoreSource};

fn hello(store: &std::path::Path) -> String {
    let out = Command::new(store.join("opt/manager/env/bin/python3"))
        .args(["-c", "import cfyhello; print(cfyhello.hello())"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn round_trip(precopy: bool) {
    let e = common::env(if precopy { "" } else { "precopy: false" });
    let store = e.store();
    assert!(
        store::has_xattrs(&store),
        "the test file system must take xattrs"
    );
    let scratch = tempfile::tempdir().unwrap();
    store::manager_store(&store, scratch.path());
    assert_eq!(hello(&store), "hello from cfyhello");
    let before = store::listing(&store);
    assert!(before["var/lib/dbus/machine-id"].starts_with("link /etc/machine-id "));
    assert!(before["var/lib/pgsql/9.5/data/sparse"].contains("sparse=true"));
    assert!(before["etc/cloudify/config.yaml"].contains("system.posix_acl_access="));

    let engine = Engine::new(&e.ctx, Arc::new(NoServices));
    let rt = common::runtime();
    let meta = rt
        .block_on(engine.run_snapshot(engine.begin_snapshot().unwrap()))
        .unwrap();
    let first = store::manifest_entries(&engine.archive_path(&meta.id).unwrap());
    let kinds: Vec<&str> = first
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for k in ["file", "dir", "symlink", "hardlink", "fifo"] {
        assert!(kinds.contains(&k), "no {k} in the manifest");
    }

    // Wipe the store, restore, compare.
    for item in std::fs::read_dir(&store).unwrap() {
        let p = item.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let job = engine.begin_restore().unwrap();
    rt.block_on(engine.run_restore(job, RestoreSource::Id(meta.id.clone())))
        .unwrap();
    let after = store::listing(&store);
    let diff: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}:\n  before {v}\n  after  {:?}", after.get(k)))
        .chain(
            after
                .keys()
                .filter(|k| !before.contains_key(*k))
                .map(|k| format!("{k}: new")),
        )
        .collect();
    assert!(
        diff.is_empty(),
        "restored store differs:\n{}",
        diff.join("\n")
    );
    assert!(
        !store.join("var/lib/rabbitmq/sock").exists(),
        "sockets are left out"
    );
    assert_eq!(hello(&store), "hello from cfyhello");

    // A snapshot of the restored store has the same manifest.
    let again = rt
        .block_on(engine.run_snapshot(engine.begin_snapshot().unwrap()))
        .unwrap();
    let second = store::manifest_entries(&engine.archive_path(&again.id).unwrap());
    assert_eq!(first, second, "manifests differ");
}

#[test]
fn a_manager_shaped_store_comes_back_exactly_from_a_live_archive() {
    round_trip(true);
}

#[test]
fn a_manager_shaped_store_comes_back_exactly_from_a_paused_copy() {
    round_trip(false);
}

/// Archives hold the store's secrets: neither the archive directory nor an archive nor its
/// metadata is readable by another user, whatever the directory was before.
#[test]
fn archives_are_private() {
    let e = common::env("");
    common::populate(&e.store());
    // An archive directory left world-readable (as older versions made it); the test root
    // itself open, so that only the archive's own modes stand in the way.
    std::fs::create_dir_all(e.archives()).unwrap();
    for d in [e.root(), &e.archives()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let engine = Engine::new(&e.ctx, Arc::new(NoServices));
    let meta = common::runtime()
        .block_on(engine.run_snapshot(engine.begin_snapshot().unwrap()))
        .unwrap();
    let archive = engine.archive_path(&meta.id).unwrap();
    let json = e.archives().join(format!("{}.json", meta.id));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&e.archives()), 0o700);
    assert_eq!(mode(&archive), 0o600);
    assert_eq!(mode(&json), 0o600);
    assert_eq!(std::fs::metadata(&archive).unwrap().uid(), 0);
    let as_nobody = |args: &[&std::ffi::OsStr]| {
        Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    // The same user can read what is open to it (the check itself works) ...
    let ok = as_nobody(&["ls".as_ref(), e.root().as_os_str()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // ... but neither the directory nor the archive nor the metadata.
    for (cmd, path) in [
        ("ls", e.archives()),
        ("cat", archive.clone()),
        ("cat", json.clone()),
    ] {
        let out = as_nobody(&[cmd.as_ref(), path.as_os_str()]);
        assert!(
            !out.status.success(),
            "{cmd} {} worked as nobody",
            path.display()
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Even when the directory is opened up again, the archive stays closed.
    std::fs::set_permissions(e.archives(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = as_nobody(&["cat".as_ref(), archive.as_os_str()]);
    assert!(!out.status.success());
}
