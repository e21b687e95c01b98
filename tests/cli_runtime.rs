//! The CLI asks the running init: `ready` and `status` find the control socket through the
//! runtime file the init wrote, so a config file broken after a SIGHUP (which the init
//! rightly refuses, keeping its running config) does not make a healthy init "unhealthy".

#[path = "common/services.rs"]
mod services;

use std::process::{Command, Output};

use services::{poll, Sandbox, BIN, PATIENCE};

fn cli(sb: &Sandbox, config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--root")
        .arg(sb.dir.path())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CFY_INIT_HOOKS_URL")
        .output()
        .unwrap()
}

#[test]
fn sighup_with_a_broken_file_then_ready_still_exits_0() {
    let sb = Sandbox::new();
    // A socket path other than the default, so only the config or the runtime file know it.
    let config = "hooks:\n  socket: /run/custom/ctl.sock\nsupervise:\n  services:\n    \
                  - name: idle\n      command: [sleep, '100000']\n      startsecs: 0s\n";
    let mut init = sb.start(config, &[], "hup.log");
    let file = sb.path("hup.log.config.yaml");
    poll("cfy-init ready", PATIENCE, || {
        cli(&sb, &file, &["ready"]).status.success().then_some(())
    });
    let runtime = std::fs::read_to_string(sb.path("run/cfy-init/runtime.json")).unwrap();
    let info: serde_json::Value = serde_json::from_str(&runtime).unwrap();
    assert_eq!(
        info["socket"].as_str(),
        Some(sb.path("run/custom/ctl.sock").to_str().unwrap()),
        "{runtime}"
    );
    assert!(!runtime.contains("token\":"), "no secret: {runtime}");

    std::fs::write(&file, "hooks: [this is: not: valid\n").unwrap();
    init.signal(libc::SIGHUP);
    poll("the reload to be refused", PATIENCE, || {
        init.events()
            .iter()
            .any(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("reload failed"))
            })
            .then_some(())
    });
    let out = cli(&sb, &file, &["ready"]);
    init.check(
        out.status.success(),
        &format!(
            "ready after a broken SIGHUP: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    );
    let out = cli(&sb, &file, &["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["ready"], true);

    // Once the init is gone, the stale runtime file is not trusted over a broken config:
    // `ready` says not ready (1), it does not claim success.
    init.signal(libc::SIGTERM);
    assert_eq!(init.wait_exit().code(), Some(0));
    let out = cli(&sb, &file, &["ready"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
