//! Crash injection: `cfy-init persist` is killed with SIGKILL at every step boundary (the
//! debug build's deterministic fault points), at random instants (a real `kill -9` after a
//! random delay) and twice in a row; the next boot must converge on a store identical to
//! the image (checksums and metadata), every directory linked, no staging left behind.

#[path = "common/persist.rs"]
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};

const SEED: u64 = 11;

type Image = BTreeMap<&'static str, BTreeMap<PathBuf, Entry>>;

fn fresh_root() -> tempfile::TempDir {
    let tmp = tempdir();
    generate(tmp.path(), Spec::tiny(SEED));
    fs::create_dir(tmp.path().join("cfy-persist")).unwrap();
    tmp
}

/// Boot once more without faults and check the outcome; the error says what is wrong.
fn recover_and_verify(root: &Path, image: &Image) -> Result<(), String> {
    let out = cfy_init(root, &["persist"], &[]);
    if !out.status.success() {
        return Err(format!("recovery boot failed: {}", text(&out)));
    }
    verify_linked(root, image)?;
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("cfy-persist/.cfy-init/state.json")).unwrap())
            .unwrap();
    for d in DIRS {
        if state["directories"][format!("/{d}")]["origin"] != "seeded" {
            return Err(format!("/{d} not recorded as seeded: {state}"));
        }
    }
    if state["first_seed_pending"] != true {
        return Err("first seed no longer pending although it was never confirmed".into());
    }
    Ok(())
}

fn crash_at(root: &Path, point: u64) -> std::process::Output {
    cfy_init(
        root,
        &["persist"],
        &[("CFY_INIT_FAULT_AT", &point.to_string())],
    )
}

#[test]
fn kill_9_at_any_instant_converges_on_the_next_boot() {
    let reference = fresh_root();
    let image = snapshot_dirs(reference.path());
    // How many fault points a complete boot passes.
    let count_file = reference.path().join("fault-count");
    let started = Instant::now();
    let out = cfy_init(
        reference.path(),
        &["persist"],
        &[("CFY_INIT_FAULT_COUNT", count_file.to_str().unwrap())],
    );
    let full_run = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    verify_linked(reference.path(), &image).unwrap();
    let points: u64 = fs::read_to_string(&count_file).unwrap().parse().unwrap();
    assert!(points > 100, "only {points} fault points");

    let mut failures = Vec::new();
    let mut crashes = 0;
    // Every step boundary (or an even spread of 200 of them).
    let stride = (points / 200).max(1);
    for point in (1..=points).step_by(stride as usize) {
        let tmp = fresh_root();
        let out = crash_at(tmp.path(), point);
        assert_eq!(
            out.status.signal(),
            Some(9),
            "point {point}/{points} did not kill: {}",
            text(&out)
        );
        crashes += 1;
        if let Err(e) = recover_and_verify(tmp.path(), &image) {
            failures.push(format!("crash at point {point}: {e}"));
        }
    }
    // Crashing the recovery boot too.
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for _ in 0..15 {
        let tmp = fresh_root();
        let (first, second) = (rng.gen_range(1..=points), rng.gen_range(1..=points));
        let _ = crash_at(tmp.path(), first);
        let _ = crash_at(tmp.path(), second);
        crashes += 1;
        if let Err(e) = recover_and_verify(tmp.path(), &image) {
            failures.push(format!("crash at points {first} then {second}: {e}"));
        }
    }
    // Real kill -9 at random instants within a boot's duration.
    let window = full_run.as_micros().max(1000) as u64;
    let mut killed_mid_run = 0;
    for _ in 0..40 {
        let tmp = fresh_root();
        let mut child = command(tmp.path(), &["persist"], &[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..window)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.signal() == Some(9) {
            killed_mid_run += 1;
        }
        crashes += 1;
        if let Err(e) = recover_and_verify(tmp.path(), &image) {
            failures.push(format!("random kill -9: {e}"));
        }
    }
    eprintln!("{crashes} crashes ({points} fault points, {killed_mid_run}/40 random kills landed mid-run), {} inconsistent", failures.len());
    assert!(crashes >= 200);
    assert!(
        failures.is_empty(),
        "{} inconsistent outcomes:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A seeded store and a new image (v2) that adds entries and changes one file.
fn upgraded_root(config: &Path) -> tempfile::TempDir {
    let tmp = fresh_root();
    let root = tmp.path();
    let cfg = config.to_str().unwrap();
    let out = cfy_init(
        root,
        &["--config", cfg, "persist"],
        &[("CFY_IMAGE_ID", "v1")],
    );
    assert!(out.status.success(), "{}", text(&out));
    for d in DIRS {
        fs::remove_file(root.join(d)).unwrap();
        fs::rename(root.join(format!("{d}-initial")), root.join(d)).unwrap();
    }
    fs::create_dir_all(root.join("opt/manager/new/deeper")).unwrap();
    fs::write(root.join("opt/manager/new/deeper/plugin.yaml"), "plugin").unwrap();
    fs::write(root.join("var/lib/new-file"), "new").unwrap();
    fs::write(
        root.join("etc/cloudify/config.yaml"),
        "changed by the new image",
    )
    .unwrap();
    tmp
}

fn verify_upgrade(root: &Path, config: &Path) -> Result<(), String> {
    let out = cfy_init(
        root,
        &["--config", config.to_str().unwrap(), "persist"],
        &[("CFY_IMAGE_ID", "v2")],
    );
    if !out.status.success() {
        return Err(format!("recovery boot failed: {}", text(&out)));
    }
    let store = root.join("cfy-persist");
    let read = |p: &str| fs::read_to_string(store.join(p)).map_err(|e| format!("{p}: {e}"));
    if read("opt/manager/new/deeper/plugin.yaml")? != "plugin" || read("var/lib/new-file")? != "new"
    {
        return Err("new entries missing or wrong".into());
    }
    if read("etc/cloudify/config.yaml")?.contains("changed") {
        return Err("add-missing overwrote a file".into());
    }
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(store.join(".cfy-init/state.json")).unwrap()).unwrap();
    for d in DIRS {
        if state["directories"][format!("/{d}")]["image_id"] != "env:v2" {
            return Err(format!("/{d} not recorded for v2: {state}"));
        }
        if fs::read_link(root.join(d)).ok() != Some(store.join(d)) {
            return Err(format!("/{d} not linked"));
        }
    }
    if store.join(".cfy-init/staging").exists() {
        return Err("staging left behind".into());
    }
    Ok(())
}

#[test]
fn kill_9_during_add_missing_converges_without_overwriting() {
    let cfg_dir = tempdir();
    let config = cfg_dir.path().join("c.yaml");
    let mut yaml = String::from("persist:\n  directories:\n");
    for d in DIRS {
        yaml.push_str(&format!(
            "    - {{ path: /{d}, on_new_image: add-missing }}\n"
        ));
    }
    fs::write(&config, yaml).unwrap();
    let cfg = config.to_str().unwrap();
    let reference = upgraded_root(&config);
    let count_file = cfg_dir.path().join("count");
    let out = cfy_init(
        reference.path(),
        &["--config", cfg, "persist"],
        &[
            ("CFY_IMAGE_ID", "v2"),
            ("CFY_INIT_FAULT_COUNT", count_file.to_str().unwrap()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    verify_upgrade(reference.path(), &config).unwrap();
    let points: u64 = fs::read_to_string(&count_file).unwrap().parse().unwrap();
    assert!(points > 10, "only {points} fault points");
    let mut failures = Vec::new();
    for point in 1..=points {
        let tmp = upgraded_root(&config);
        let out = cfy_init(
            tmp.path(),
            &["--config", cfg, "persist"],
            &[
                ("CFY_IMAGE_ID", "v2"),
                ("CFY_INIT_FAULT_AT", &point.to_string()),
            ],
        );
        assert_eq!(
            out.status.signal(),
            Some(9),
            "point {point} did not kill: {}",
            text(&out)
        );
        if let Err(e) = verify_upgrade(tmp.path(), &config) {
            failures.push(format!("crash at point {point}: {e}"));
        }
    }
    eprintln!(
        "{points} add-missing crash points, {} inconsistent",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
