//! Adoption of a store left by the legacy start-persistent.sh: `cp -rp` copies at
//! `/cfy-persist/<dir>`, links with the doubled slash (`/cfy-persist//var/lib`), `-initial`
//! directories with the stray link its restart bug left inside, no state file. The data
//! must not change by a byte; directories the legacy store lacks are seeded.

#[path = "common/persist.rs"]
mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use common::*;

/// The directory the legacy store lacks (e.g. added to the list later).
const NOT_IN_LEGACY: &str = "opt/restservice";

/// Lay out `root` the way the legacy script leaves it after a few container restarts.
fn legacy_layout(root: &Path) {
    let store = root.join("cfy-persist");
    for d in DIRS.iter().filter(|d| **d != NOT_IN_LEGACY) {
        let parent = store.join(d).parent().unwrap().to_path_buf();
        fs::create_dir_all(&parent).unwrap();
        // Exactly what the legacy script ran.
        let st = Command::new("cp")
            .arg("-rp")
            .arg(root.join(d))
            .arg(&parent)
            .status()
            .unwrap();
        assert!(st.success());
        let initial = root.join(format!("{d}-initial"));
        fs::rename(root.join(d), &initial).unwrap();
        symlink(format!("/cfy-persist//{d}"), root.join(d)).unwrap();
        if *d == "var/lib" || *d == "opt/manager" {
            // The restart bug: `mv D D-initial` moved the link into the existing -initial.
            let name = Path::new(d).file_name().unwrap();
            symlink(format!("/cfy-persist//{d}"), initial.join(name)).unwrap();
        }
    }
}

#[test]
fn a_legacy_store_is_adopted_without_changing_a_byte() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::small(21));
    fs::create_dir(root.join("cfy-persist")).unwrap();
    let image = snapshot_dirs(root);
    legacy_layout(root);
    let store = root.join("cfy-persist");
    let before: Vec<_> = DIRS
        .iter()
        .filter(|d| **d != NOT_IN_LEGACY)
        .map(|d| (*d, snapshot(&store.join(d))))
        .collect();

    let out = cfy_init(root, &["persist"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("store without a state file: adopting"),
        "{log}"
    );
    for (d, snap) in &before {
        assert!(
            log.contains(&format!(
                "adopted legacy store copy as seeded, unchanged dir=/{d}"
            )),
            "{d}: {log}"
        );
        assert_eq!(&snapshot(&store.join(d)), snap, "{d} changed while adopted");
    }
    assert_eq!(
        log.matches("removed the stray link the legacy restart bug left")
            .count(),
        2,
        "{log}"
    );
    // Every directory is linked without the doubled slash, -initial is the pristine image.
    for (d, snap) in &image {
        let target = fs::read_link(root.join(d)).unwrap();
        assert_eq!(target, store.join(d));
        assert_eq!(
            target.as_os_str(),
            store.join(d).as_os_str(),
            "no doubled slash"
        );
        let mut kept = snapshot(&root.join(format!("{d}-initial")));
        if *d == "var/lib" || *d == "opt/manager" {
            // Adding and removing the stray link changed the directory's own mtime.
            kept.get_mut(Path::new("")).unwrap().mtime = snap[Path::new("")].mtime;
        }
        assert!(&kept == snap, "{d}-initial: {:?}", diff(snap, &kept));
    }
    // The directory the legacy store lacked was seeded from the image.
    assert!(diff(&image[NOT_IN_LEGACY], &snapshot(&store.join(NOT_IN_LEGACY))).is_none());
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(store.join(".cfy-init/state.json")).unwrap()).unwrap();
    assert_eq!(state["legacy"], true);
    assert_eq!(
        state["first_seed_pending"], false,
        "the legacy script set the password already"
    );
    assert_eq!(state["directories"]["/var/lib"]["origin"], "adopted");
    assert_eq!(
        state["directories"][format!("/{NOT_IN_LEGACY}")]["origin"],
        "seeded"
    );

    // The next boots change nothing.
    let layout_after = layout(root);
    for _ in 0..3 {
        let out = cfy_init(root, &["persist"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(layout(root), layout_after);
    }
}

#[test]
fn a_symlink_inside_the_store_is_never_followed() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::tiny(22));
    let outside = root.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("precious"), "do not touch").unwrap();
    // A legacy-looking store where /var/lib's copy is a symlink out of the store.
    fs::create_dir_all(root.join("cfy-persist/var")).unwrap();
    symlink(&outside, root.join("cfy-persist/var/lib")).unwrap();
    let out = cfy_init(root, &["persist"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap();
    assert!(
        last.contains("cfy-persist/var/lib: is a symlink where the store needs a directory")
            && last.contains("never follows symlinks"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing written outside the store"
    );
    assert!(
        fs::symlink_metadata(root.join("var/lib")).unwrap().is_dir(),
        "image left alone"
    );
}
