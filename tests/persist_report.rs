//! The library entry points: `persist::run`'s report (what /status shows), the first-seed
//! flag until `confirm_first_seed`, and progress lines during long copies.

#[path = "common/persist.rs"]
mod common;

use std::fs;
use std::path::Path;

use cfy_init::config::{Config, Context, Root};
use cfy_init::persist::{self, DirOutcome, LinkOutcome};
use common::*;

fn context(root: &Path) -> Context {
    let root = Root::new(root);
    Context {
        config: Config::load(None, &root).unwrap(),
        root,
        config_path: None,
    }
}

#[test]
fn report_says_what_happened_and_first_seed_holds_until_confirmed() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::tiny(41));
    fs::create_dir(root.join("cfy-persist")).unwrap();
    let ctx = context(root);
    // What the copy must count for /var/lib: regular files, each inode once.
    let image = snapshot(&root.join("var/lib"));
    let want_bytes: u64 = image
        .iter()
        .filter(|(p, e)| e.kind == "file" && e.link_group.as_ref().is_none_or(|g| g == *p))
        .map(|(_, e)| e.size)
        .sum();
    let want_files = image
        .values()
        .filter(|e| !matches!(e.kind, "dir" | "socket"))
        .count() as u64;

    let report = persist::run(&ctx).unwrap();
    assert!(report.store_found && report.first_seed && !report.legacy_adopted);
    assert_eq!(report.directories.len(), DIRS.len());
    for (d, r) in DIRS.iter().zip(&report.directories) {
        assert_eq!(r.path, Path::new("/").join(d));
        assert_eq!(r.outcome, DirOutcome::Seeded);
        assert_eq!(r.link, LinkOutcome::Linked);
        assert!(r.files_copied > 0, "{r:?}");
    }
    assert_eq!(report.directories[0].bytes_copied, want_bytes);
    assert_eq!(report.directories[0].files_copied, want_files);
    assert_eq!(persist::last_report(), Some(report.clone()));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["directories"][0]["outcome"], "seeded");
    assert_eq!(json["directories"][0]["link"], "linked");

    // A boot that died before the password was set: still the first seed.
    let again = persist::run(&ctx).unwrap();
    assert!(again.first_seed);
    assert!(again
        .directories
        .iter()
        .all(|r| r.outcome == DirOutcome::AlreadyPresent
            && r.link == LinkOutcome::AlreadyLinked
            && r.files_copied == 0));
    persist::confirm_first_seed(&ctx).unwrap();
    assert!(!persist::run(&ctx).unwrap().first_seed);
}

#[test]
fn no_store_is_reported_as_not_persisted() {
    let tmp = tempdir();
    generate(tmp.path(), Spec::tiny(42));
    let report = persist::run(&context(tmp.path())).unwrap();
    assert!(!report.store_found && !report.first_seed);
    assert!(report
        .directories
        .iter()
        .all(|r| r.outcome == DirOutcome::NotPersisted && r.link == LinkOutcome::None));
}

#[test]
fn long_copies_log_progress() {
    let tmp = tempdir();
    let root = tmp.path();
    generate(root, Spec::medium(43));
    fs::create_dir(root.join("cfy-persist")).unwrap();
    let config = root.join("c.yaml");
    fs::write(
        &config,
        "persist:\n  progress_interval: 1ms\n  workers: 1\n",
    )
    .unwrap();
    let out = cfy_init(
        root,
        &["--config", config.to_str().unwrap(), "persist"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("copy in progress"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("files=") && line.contains("mbytes=") && line.contains("mb_per_s="),
        "{line}"
    );
}
