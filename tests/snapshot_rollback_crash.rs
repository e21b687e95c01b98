//! A restore whose rollback is cut short by SIGKILL is completed by the next boot, with the
//! real binary. `cfy-init run` supervises a service that is never ready on the restored
//! store, so the restore starts a rollback; the rollback first stops that service, which
//! holds it there (it ignores SIGTERM while the restored store is in place and says so in a
//! file): a pause point the test waits for, with the job in phase `rollback` and the journal
//! at `in`. cfy-init is killed there. One case boots on exactly what the killed process left;
//! the other first takes the rollback further, half-way, exactly as `swap_back` writes it
//! (the restored tree moved aside, the journal at `back`, one old entry back in the store),
//! so that a boot must finish a rollback cut short between its renames. Either way the next
//! boot (`cfy-init run`, whose first step puts the store right before persist) brings back
//! the old store exactly (names, types, modes, owners, contents, symlinks, hard links) and
//! leaves no `.cfy-snapshot-*` behind.

#[path = "common/hooks.rs"]
mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use common::{env_with, fingerprint, poll, populate, request, Env};
use hyper::{Method, StatusCode};

const RESERVED: &str = ".cfy-snapshot-";

/// The store as a restore must give it back: [`fingerprint`] (the boot's own `.cfy-init`
/// records aside, which every boot rewrites) plus the names of each multiply linked file.
fn store_print(store: &Path) -> (BTreeMap<String, String>, Vec<Vec<String>>) {
    let mut print = fingerprint(store);
    print.retain(|k, _| !k.starts_with(".cfy-init"));
    let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for rel in print.keys() {
        let m = std::fs::symlink_metadata(store.join(rel)).unwrap();
        if m.is_file() && m.nlink() > 1 {
            groups.entry(m.ino()).or_default().push(rel.clone());
        }
    }
    let mut groups: Vec<Vec<String>> = groups.into_values().collect();
    groups.sort();
    (print, groups)
}

fn reserved_names(store: &Path) -> Vec<String> {
    std::fs::read_dir(store)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(RESERVED))
        .collect()
}

/// `cfy-init run` on the test root; SIGKILLed on drop if the test did not end it.
struct Running {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Running {
    fn start(e: &Env, log_name: &str) -> Running {
        let log = e.root().join(log_name);
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cfy-init"))
            .arg("--root")
            .arg(e.root())
            .arg("--config")
            .arg(&e.config_file)
            .arg("run")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Running {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a power cut or the OOM killer would end it, and reap it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = c.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
    }
}

/// The service left behind by the killed init (its pid in `app.pid`) is ended by the test.
struct Orphan(std::path::PathBuf);

impl Drop for Orphan {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// What `swap_back` does before its last renames, on the state the killed restore left
/// (journal `in`): the restored entries into `.cfy-snapshot-failed`, the journal to
/// `back` (written atomically, as `write_atomic` does), then the first old entry the
/// rollback directory lists back into the store; cut there.
fn take_the_rollback_half_way(store: &Path) {
    let failed = store.join(format!("{RESERVED}failed"));
    let rollback = store.join(format!("{RESERVED}rollback"));
    let journal = store.join(format!("{RESERVED}journal"));
    std::fs::create_dir(&failed).unwrap();
    for item in std::fs::read_dir(store).unwrap() {
        let item = item.unwrap();
        if !item.file_name().to_string_lossy().starts_with(RESERVED) {
            std::fs::rename(item.path(), failed.join(item.file_name())).unwrap();
        }
    }
    let tmp = store.join(format!("{RESERVED}journal.tmp"));
    std::fs::write(&tmp, "back\n").unwrap();
    std::fs::rename(&tmp, &journal).unwrap();
    let old: Vec<_> = std::fs::read_dir(&rollback)
        .unwrap()
        .map(|d| d.unwrap())
        .collect();
    assert!(old.len() > 1, "the old store has several entries");
    std::fs::rename(old[0].path(), store.join(old[0].file_name())).unwrap();
}

async fn rollback_killed_then_boot(half_way: bool) {
    // `app` keeps running through snapshots (a live service) and is stopped only around a
    // restore. Ready only while the store has no `bad`; with `bad` in the store it does not
    // stop on SIGTERM (until SIGKILL after a minute) and touches `stopping` instead.
    let e = env_with(
        "quiesce:\n  services: []\n  live_services: [app]\nready_timeout: 3s",
        "supervise:\n  services:\n    - name: app\n      shell: true\n      command: [\"trap 'if test -f {store}/bad; then touch {store}/../stopping; else exit 0; fi' TERM; echo $$ > {store}/../app.pid; while :; do sleep 0.1; done\"]\n      startsecs: 0s\n      stop_timeout: 60s\n      readiness:\n        check: {type: exec, command: [/bin/sh, -c, \"test ! -f {store}/bad\"]}\n        interval: 100ms\n",
    );
    let store = e.store();
    let _orphan = Orphan(e.root().join("app.pid"));
    populate(&store);
    // The archive: the store with `bad` and other contents.
    std::fs::write(store.join("bad"), "restored").unwrap();
    std::fs::write(store.join("var/lib/data/a.txt"), "restored\n").unwrap();
    std::fs::write(store.join("only-restored"), "r").unwrap();

    let mut init = Running::start(&e, "init.log");
    let socket = e.root().join("run/cfy-init/control.sock");
    poll(Duration::from_secs(30), "control socket", || {
        socket.exists()
    });
    let to = common::To::Unix(socket);
    let r = request(
        &to,
        Method::POST,
        "/snapshots?wait=true",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", init.log());
    let id = r.json()["id"].as_str().unwrap().to_string();

    // The old store, put back at the end: no `bad`, other contents, a hard link, odd modes.
    std::fs::remove_file(store.join("bad")).unwrap();
    std::fs::remove_file(store.join("only-restored")).unwrap();
    std::fs::write(store.join("var/lib/data/a.txt"), "old\n").unwrap();
    std::fs::create_dir_all(store.join("opt/old")).unwrap();
    std::fs::write(store.join("opt/old/db"), "old database").unwrap();
    std::fs::hard_link(store.join("opt/old/db"), store.join("opt/old/db.link")).unwrap();
    std::os::unix::fs::symlink("../opt/old/db", store.join("var/db")).unwrap();
    std::fs::set_permissions(
        store.join("opt/old"),
        std::os::unix::fs::PermissionsExt::from_mode(0o710),
    )
    .unwrap();
    let before = store_print(&store);

    // Restore; the service is not ready on the restored store, so the rollback starts and
    // stops it, which holds the rollback until the service gives up.
    let body = format!("{{\"id\":\"{id}\"}}");
    let r = request(
        &to,
        Method::POST,
        "/restore",
        &[("content-type", "application/json")],
        Body::from(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", init.log());
    let job = r.json()["id"].as_str().unwrap().to_string();
    let stopping = e.root().join("stopping");
    poll(Duration::from_secs(60), "the rollback stopping app", || {
        stopping.exists()
    });
    let info = request(
        &to,
        Method::GET,
        &format!("/jobs/{job}"),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(info.json()["phase"], "rollback", "{}", info.json());
    let journal = store.join(format!("{RESERVED}journal"));
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), "in\n");
    assert!(store.join("bad").exists(), "the restored store is in place");
    init.kill();
    drop(_orphan);

    if half_way {
        take_the_rollback_half_way(&store);
        assert_ne!(store_print(&store), before, "the store is really half-way");
    }
    assert!(journal.exists());

    // The next boot: the recovery runs first, then persist; `-- true` ends the run once
    // the boot steps are done.
    let out = Command::new(env!("CARGO_BIN_EXE_cfy-init"))
        .arg("--root")
        .arg(e.root())
        .arg("--config")
        .arg(&e.config_file)
        .args(["run", "--", "/bin/true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "second boot failed:\n{log}");
    assert_eq!(store_print(&store), before, "second boot:\n{log}");
    assert!(
        log.contains("an interrupted restore was rolled back"),
        "second boot:\n{log}"
    );
    assert_eq!(
        std::fs::read_to_string(store.join("var/lib/data/a.txt")).unwrap(),
        "old\n"
    );
    assert_eq!(reserved_names(&store), Vec::<String>::new());
    assert!(store.join(".cfy-init/state.json").exists());
}

/// Killed while the rollback stops the services: the boot does the whole rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_killed_while_stopping_the_services_is_completed_at_boot() {
    rollback_killed_then_boot(false).await;
}

/// Killed, and the rollback taken half-way as `swap_back` leaves it when cut between its
/// renames: the boot finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_cut_short_between_its_renames_is_completed_at_boot() {
    rollback_killed_then_boot(true).await;
}
