//! `cfy-recover watch` against the simulator: the manager's server goes to ERROR (its VM
//! stops), the watcher rebuilds it once from the inventory, and within the cooldown it does
//! not act again when the new server fails too.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

/// One metric's value from the watcher's metrics file (0 when absent).
fn metric(file: &std::path::Path, line_prefix: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(line_prefix) && l[line_prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The watcher is killed (by its own pid) even when an assertion fails.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn watcher_rebuilds_a_server_in_error_once_then_respects_the_cooldown() {
    let w = World::new();
    w.wait_manager_ready();
    let inventory = w.dir.path().join("inventory.json");
    let saved = w.run(&[
        "inventory",
        "save",
        "--server",
        "cfy-manager",
        "--file",
        &path_str(&inventory),
    ]);
    assert_eq!(exit_code(&saved), Some(0), "{}", stderr(&saved));

    w.sim
        .set_server_error(&w.seeded.server_id, "hypervisor failure");
    let metrics = w.dir.path().join("watch.prom");
    let token = path_str(&w.token_file);
    let child = w
        .cmd(&[
            "watch",
            "--inventory",
            &path_str(&inventory),
            "--interval",
            "200ms",
            "--failures",
            "2",
            "--cooldown",
            "1h",
            "--probe-timeout",
            "500ms",
            "--manager-address",
            "fixed",
            "--manager-token-file",
            &token,
            "--ready-timeout",
            "60s",
            "--metrics-file",
            &path_str(&metrics),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _watcher = Watcher(child);

    poll("the watcher's recovery", Duration::from_secs(120), || {
        std::fs::read(w.state_dir.join("journal.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|j| j["finished"] == true)
    });
    let new_id = w.assert_recovered();
    w.wait_manager_ready();
    assert_eq!(metric(&metrics, "cfy_recover_watch_recoveries_total"), 1);

    // The new server fails too: within the cooldown the watcher only says so.
    w.sim.set_server_error(&new_id, "hypervisor failure again");
    let cooldown = "cfy_recover_watch_decisions_total{decision=\"cooldown\"}";
    poll("cooldown decisions", Duration::from_secs(60), || {
        metric(&metrics, cooldown) >= 3
    });
    assert_eq!(metric(&metrics, "cfy_recover_watch_recoveries_total"), 1);
    let servers = w.sim.servers();
    assert_eq!(servers.len(), 1, "{servers:#?}");
    assert_eq!(servers[0].id, new_id, "no second rebuild");
}
