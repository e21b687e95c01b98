//! `cfy-recover watch` against the simulator: the manager's server goes to ERROR (its VM
//! stops), the watcher rebuilds it once from the inventory, and within the cooldown it does
//! not act again when the new server fails too; with the cloud unreachable it never acts.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use openstack_sim::{FaultKind, FaultRule};

/// One metric's value from the watcher's metrics file (0 when absent).
fn metric(file: &Path, name: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
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

fn save_inventory(w: &World) -> PathBuf {
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
    inventory
}

/// `cfy-recover watch` with a fast interval, 2 failures and a 1 h cooldown.
fn spawn_watcher(w: &World, inventory: &Path, metrics: &Path, log: Stdio) -> Watcher {
    let token = path_str(&w.token_file);
    let child = w
        .cmd(&[
            "watch",
            "--inventory",
            &path_str(inventory),
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
            &path_str(metrics),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Watcher(child)
}

fn journal_finished(w: &World) -> bool {
    std::fs::read(w.state_dir.join("journal.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|j| j["finished"] == true)
}

#[test]
fn watcher_rebuilds_a_server_in_error_once_then_respects_the_cooldown() {
    let w = World::new();
    w.wait_manager_ready();
    let inventory = save_inventory(&w);
    w.sim
        .set_server_error(&w.seeded.server_id, "hypervisor failure");
    let metrics = w.dir.path().join("watch.prom");
    let _watcher = spawn_watcher(&w, &inventory, &metrics, Stdio::inherit());

    poll("the watcher's recovery", Duration::from_secs(120), || {
        journal_finished(&w)
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

#[test]
fn watcher_never_acts_when_the_cloud_is_unreachable() {
    let w = World::new();
    w.wait_manager_ready();
    let inventory = save_inventory(&w);
    // The guest is down, and every call to the cloud (Keystone, Nova, Neutron) is dropped.
    w.sim
        .set_server_error(&w.seeded.server_id, "hypervisor failure");
    w.sim
        .add_fault(FaultRule::new(None, "/", FaultKind::Drop).times(u32::MAX));
    let metrics = w.dir.path().join("watch.prom");
    let log = w.dir.path().join("watch.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let _watcher = spawn_watcher(&w, &inventory, &metrics, Stdio::from(log_file));

    let unreachable = "cfy_recover_watch_decisions_total{decision=\"cloud_unreachable\"}";
    poll(
        "cloud-unreachable decisions",
        Duration::from_secs(90),
        || metric(&metrics, unreachable) >= 3,
    );
    assert_eq!(metric(&metrics, "cfy_recover_watch_recoveries_total"), 0);
    assert_eq!(metric(&metrics, "cfy_recover_watch_cloud_reachable"), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("cloud unreachable, not acting"), "{text}");
    assert!(
        !w.state_dir.join("journal.json").exists(),
        "no recovery started"
    );
    w.sim.clear_faults();
    let servers = w.sim.servers();
    assert_eq!(servers.len(), 1);
    assert_eq!(
        servers[0].id, w.seeded.server_id,
        "the old server untouched"
    );
}

/// Two watchers race for the lease: a rival's renewal lands between this watcher's read of
/// the port and its write. The write is conditional on the revision it read (`If-Match`),
/// so it loses (412), the watcher reads again, sees the rival's live lease and stands by:
/// the server in ERROR is left to the rival, never rebuilt by both. A plain write would
/// overwrite the rival's lease and recover.
#[test]
fn a_rival_lease_written_between_read_and_write_wins() {
    let w = World::new();
    w.wait_manager_ready();
    let inventory = save_inventory(&w);
    w.sim
        .set_server_error(&w.seeded.server_id, "hypervisor failure");
    let far = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let rival = format!("cfy-recover-watch owner=rival-watcher expires={far} last_recovery=0");
    let port_path = format!("/ports/{}", w.seeded.port_id);
    w.sim.add_fault(
        FaultRule::new(
            Some("PUT"),
            &port_path,
            FaultKind::RivalWrite {
                description: rival.clone(),
            },
        )
        .times(u32::MAX),
    );
    let metrics = w.dir.path().join("watch.prom");
    let log = w.dir.path().join("watch.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let _watcher = spawn_watcher(&w, &inventory, &metrics, Stdio::from(log_file));

    let not_leader = "cfy_recover_watch_decisions_total{decision=\"not_leader\"}";
    poll("not-leader decisions", Duration::from_secs(90), || {
        metric(&metrics, not_leader) >= 3
    });
    assert_eq!(metric(&metrics, "cfy_recover_watch_recoveries_total"), 0);
    assert_eq!(metric(&metrics, "cfy_recover_watch_leader"), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("watcher rival-watcher holds the lease"),
        "{text}"
    );
    let refused = w
        .sim
        .seen()
        .into_iter()
        .filter(|s| s.method == "PUT" && s.path.ends_with(&port_path) && s.status == 412)
        .count();
    assert_eq!(refused, 1, "the one stale write was refused");
    let description = w
        .sim
        .with_state(|st| st.ports[&w.seeded.port_id].description.clone());
    assert_eq!(description, rival, "the rival's lease stands");
    assert!(
        !w.state_dir.join("journal.json").exists(),
        "no recovery started"
    );
    let servers = w.sim.servers();
    assert_eq!(servers.len(), 1);
    assert_eq!(
        servers[0].id, w.seeded.server_id,
        "the old server untouched"
    );
}
