//! The legacy entry points kept in the image (scripts/start-persistent.sh and
//! scripts/setup-secret.sh) run the matching cfy-init steps: exercised under `--root` (via
//! CFY_INIT_ROOT) against a temp dir laid out like the manager.

#[path = "common/docker.rs"]
mod docker;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use docker::{repo, run_limited, Output};

const LIMIT: Duration = Duration::from_secs(120);

fn shim(name: &str, root: &Path, config: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(repo().join("scripts").join(name))
        .args(args)
        .env("CFY_INIT_BIN", env!("CARGO_BIN_EXE_cfy-init"))
        .env("CFY_INIT_ROOT", root)
        .env_remove("CFY_INIT_CONFIG");
    if let Some(c) = config {
        cmd.env("CFY_INIT_CONFIG", c);
    }
    run_limited(&mut cmd, LIMIT)
}

/// Every regular file under `dir` whose name is `name`.
fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            found.extend(find_files(&e.path(), name));
        } else if ft.is_file() && e.file_name() == name {
            found.push(e.path());
        }
    }
    found
}

/// A temp root with the manager's state directories and an empty store.
fn manager_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in [
        "cfy-persist",
        "var/lib/pgsql/data",
        "etc/cloudify",
        "opt/manager/resources",
        "opt/mgmtworker/env/plugins",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("var/lib/pgsql/data/PG_VERSION"), "15\n").unwrap();
    std::fs::copy(
        repo().join("docker/standin/config-5.1.2.yaml"),
        r.join("etc/cloudify/config.yaml"),
    )
    .unwrap();
    root
}

#[test]
fn setup_secret_shim_links_the_credentials_without_copying() {
    let root = tempfile::tempdir().unwrap();
    let secret = root.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("token"), "token-1").unwrap();
    std::fs::write(secret.join("ca.crt"), "ca").unwrap();
    std::fs::write(secret.join("namespace"), "onap").unwrap();

    let out = shim("setup-secret.sh", root.path(), None, &[]);
    assert!(out.ok(), "setup-secret.sh: {}", out.both());
    let target = root
        .path()
        .join("var/run/secrets/kubernetes.io/serviceaccount");
    let read = |f: &str| {
        std::fs::read_to_string(target.join(f))
            .unwrap_or_else(|e| panic!("{}/{f} after setup-secret.sh: {e}", target.display()))
    };
    assert_eq!(read("namespace"), "onap");
    assert_eq!(read("token"), "token-1");
    // The kubelet rotates the token: the manager must see the new one, not a stale copy.
    std::fs::write(secret.join("token"), "token-2").unwrap();
    assert_eq!(read("token"), "token-2", "the token was copied, not linked");
    assert!(
        !out.both().contains("token-1"),
        "the token appeared in the output"
    );

    // Running it again (rc.local on every boot) is harmless.
    let again = shim("setup-secret.sh", root.path(), None, &[]);
    assert!(again.ok(), "second setup-secret.sh: {}", again.both());
    assert_eq!(read("token"), "token-2");
}

#[test]
fn start_persistent_shim_seeds_the_store_then_runs_cfy_init() {
    let root = manager_root();
    let r = root.path();
    // Like the legacy CMD, then the main command through `cfy-init run -- CMD`.
    let out = shim(
        "start-persistent.sh",
        r,
        None,
        &["--", "/bin/sh", "-c", "exit 7"],
    );
    assert_eq!(
        out.code,
        Some(7),
        "start-persistent.sh -- CMD should end with CMD's status: {}",
        out.both()
    );
    let store = r.join("cfy-persist");
    let seeded = find_files(&store, "PG_VERSION");
    assert_eq!(
        seeded.len(),
        1,
        "PostgreSQL's data not seeded into the store: {seeded:?}"
    );
    assert_eq!(std::fs::read_to_string(&seeded[0]).unwrap(), "15\n");
    // The state directory now lives in the store: a write through its old path lands there.
    std::fs::write(r.join("var/lib/pgsql/data/written-after"), "x").unwrap();
    assert_eq!(
        find_files(&store, "written-after").len(),
        1,
        "/var/lib/pgsql/data is not linked into the store"
    );
}

#[test]
fn start_persistent_shim_stops_when_persist_fails() {
    let root = manager_root();
    let r = root.path();
    std::fs::remove_dir(r.join("cfy-persist")).unwrap();
    let config = r.join("required.yaml");
    std::fs::write(&config, "persist:\n  required: true\n").unwrap();
    let marker = r.join("main-ran");
    let out = shim(
        "start-persistent.sh",
        r,
        Some(&config),
        &[
            "--",
            "/bin/sh",
            "-c",
            &format!("touch {}", marker.display()),
        ],
    );
    assert!(
        !out.ok(),
        "a required but missing store must stop the boot: {}",
        out.both()
    );
    assert!(
        out.stderr.contains("cfy-persist"),
        "the error does not name the store: {}",
        out.stderr
    );
    assert!(
        !marker.exists(),
        "cfy-init run was exec'd after persist failed"
    );
}
