//! A process tree no service escapes (issue 16, item 6): a service's `setsid` escapee and
//! double-forked daemon carry its `CFY_INIT_SERVICE` marker and get the stop signal (TERM)
//! before anything is killed, at shutdown and on a restart; cfy-init waits for them. As
//! PID 1 of a PID namespace and not as PID 1.

#[path = "common/services.rs"]
mod services;

use std::path::{Path, PathBuf};

use services::{poll, Init, Sandbox, BIN, PATIENCE};

/// A service whose shell leaves a `setsid` escapee and a double-forked daemon behind; each
/// appends `got-term` to its file on TERM and writes `<file>.up` once it runs.
fn leaky_config(sb: &Sandbox, tag: &str) -> (String, [PathBuf; 2]) {
    let esc = sb.path(&format!("escapee-{tag}"));
    let dae = sb.path(&format!("daemon-{tag}"));
    let keeper = |f: &Path| {
        format!(
            "trap \\\"echo got-term >> {f}; exit 0\\\" TERM; echo up > {f}.up; while :; do sleep 1; done",
            f = f.display()
        )
    };
    let config = format!(
        r#"
supervise:
  services:
    - name: leaky
      command: [sh, -c, "setsid sh -c '{esc}' & (sh -c '{dae}' &) ; exec sleep 1000"]
      startsecs: 0s
"#,
        esc = keeper(&esc),
        dae = keeper(&dae),
    );
    (config, [esc, dae])
}

fn wait_up(files: &[PathBuf]) {
    for f in files {
        let up = f.with_extension("up");
        poll("the escapee to start", PATIENCE, || {
            up.exists().then_some(())
        });
    }
}

fn assert_got_term(init: &Init, files: &[PathBuf]) {
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        init.check(
            text.contains("got-term"),
            &format!("{} got no TERM", f.display()),
        );
    }
}

fn shutdown_case(pid1: bool) {
    let sb = Sandbox::new();
    let (config, files) = leaky_config(&sb, "a");
    let mut init = if pid1 {
        sb.start(&config, &[], "tree")
    } else {
        sb.start_not_pid1(&config, "tree")
    };
    wait_up(&files);
    // `status` counts the whole tree: the main `sleep` and both keepers at least.
    let processes = poll("status to answer", PATIENCE, || {
        let out = std::process::Command::new(BIN)
            .arg("--root")
            .arg(sb.dir.path())
            .arg("--config")
            .arg(sb.path("tree.config.yaml"))
            .args(["status", "--json"])
            .env_remove("CFY_INIT_HOOKS_URL")
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "leaky")?["processes"]
            .as_u64()
    });
    init.check(
        processes >= 3,
        &format!("status: {processes} processes, want >= 3"),
    );
    init.signal(libc::SIGTERM);
    let code = init.wait_exit().code().unwrap();
    init.check(code == 0, &format!("exit {code}, want 0"));
    assert_got_term(&init, &files);
}

#[test]
fn setsid_and_double_forked_processes_get_term_at_shutdown_as_pid1() {
    shutdown_case(true);
}

#[test]
fn setsid_and_double_forked_processes_get_term_at_shutdown_not_as_pid1() {
    shutdown_case(false);
}

fn restart_case(pid1: bool) {
    let sb = Sandbox::new();
    let (config, old) = leaky_config(&sb, "a");
    let mut init = if pid1 {
        sb.start(&config, &[], "tree")
    } else {
        sb.start_not_pid1(&config, "tree")
    };
    wait_up(&old);
    // A changed definition restarts the service (stop, then start) on SIGHUP.
    let (config, new) = leaky_config(&sb, "b");
    sb.write("tree.config.yaml", &config);
    init.signal(libc::SIGHUP);
    wait_up(&new);
    for f in &old {
        poll("the old tree to get TERM", PATIENCE, || {
            std::fs::read_to_string(f)
                .ok()
                .filter(|t| t.contains("got-term"))
                .map(|_| ())
        });
    }
    init.signal(libc::SIGTERM);
    let code = init.wait_exit().code().unwrap();
    init.check(code == 0, &format!("exit {code}, want 0"));
    assert_got_term(&init, &new);
}

#[test]
fn setsid_and_double_forked_processes_get_term_on_restart_as_pid1() {
    restart_case(true);
}

#[test]
fn setsid_and_double_forked_processes_get_term_on_restart_not_as_pid1() {
    restart_case(false);
}
