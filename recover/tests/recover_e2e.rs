//! End to end: cfy-recover against the OpenStack simulator whose servers run real cfy-init.

mod common;

use common::*;

#[test]
fn happy_path_keeps_ip_volume_floating_ip_and_data() {
    let w = World::new();
    w.wait_manager_ready();
    w.write_through_server("data/hello.txt", "written through the old server\n");
    assert_eq!(
        w.served("data/hello.txt").as_deref(),
        Some("written through the old server\n")
    );
    let plan = w.run(&[
        "plan",
        "--server",
        "cfy-manager",
        "--manager-address",
        "fixed",
        "--json",
    ]);
    assert_eq!(exit_code(&plan), Some(0));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["manager_answers"], true);
    assert!(
        plan["journal"]["spec"]["user_data"]
            .as_str()
            .unwrap()
            .starts_with("<redacted"),
        "user data may hold secrets: not printed"
    );
    assert!(
        w.sim.seen().iter().all(|s| !s.is_mutating()),
        "plan changes nothing"
    );

    let out = w.recover(&[]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    w.assert_recovered();
    let j = w.journal();
    let step = |name: &str| {
        j["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(step("snapshot")["state"], "done", "{j:#}");
    assert_eq!(step("restore")["state"], "done", "{j:#}");
    assert_eq!(step("detach-volumes")["state"], "done", "{j:#}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("create-server"), "{report}");
    assert!(report.contains("total"), "{report}");
    w.wait_manager_ready();
    assert_eq!(
        w.served("data/hello.txt").as_deref(),
        Some("written through the old server\n"),
        "the new server serves the data"
    );
    let status = w.run(&["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("done, new server"));
}

#[test]
fn server_in_error_recovers_with_the_volume_alone() {
    let w = World::new();
    w.wait_manager_ready();
    w.write_through_server("data/state.txt", "before the failure\n");
    w.sim
        .set_server_error(&w.seeded.server_id, "hypervisor lost the domain");
    let out = w.recover(&[]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    w.assert_recovered();
    let j = w.journal();
    let state = |name: &str| {
        j["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == name)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(
        state("snapshot"),
        "skipped",
        "the dead manager cannot snapshot"
    );
    assert_eq!(
        state("detach-volumes"),
        "skipped",
        "Nova refuses detach in ERROR"
    );
    assert_eq!(state("restore"), "skipped");
    // Nova was never asked to detach from the ERROR server.
    assert!(!w
        .sim
        .seen()
        .iter()
        .any(|s| s.method == "DELETE" && s.path.contains("os-volume_attachments")));
    w.wait_manager_ready();
    assert_eq!(
        w.served("data/state.txt").as_deref(),
        Some("before the failure\n")
    );
}

#[test]
fn compute_host_down_delete_still_frees_port_and_volume() {
    let w = World::new();
    w.wait_manager_ready();
    w.write_through_server("data/state.txt", "on the dead host\n");
    w.sim.set_host_up("compute-1", false);
    let out = w.recover(&[]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    let id = w.assert_recovered();
    assert_eq!(
        w.sim.with_state(|st| st.servers[&id].host.clone()),
        "compute-2"
    );
    let j = w.journal();
    assert_eq!(j["old_server"]["host_status"], "DOWN");
    w.wait_manager_ready();
    assert_eq!(
        w.served("data/state.txt").as_deref(),
        Some("on the dead host\n")
    );
}

#[test]
fn host_down_hidden_by_policy_detach_never_finishes_then_delete_frees() {
    // A non-admin does not see host_status: the tool tries to detach, Nova accepts, the
    // dead host never does it (the volume stays `detaching`); after --detach-timeout the
    // tool deletes the server, which frees the volume and unbinds the port.
    let w = World::with(
        false,
        openstack_sim::SimConfig {
            admin_view: false,
            ..Default::default()
        },
    );
    w.wait_manager_ready();
    w.write_through_server("data/z.txt", "partitioned host\n");
    w.sim.with_state(|st| {
        st.hosts.insert("compute-1".into(), false);
    });
    let out = w.recover(&["--no-snapshot"]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(report.contains("detach did not finish"), "{report}");
    assert!(report.contains("user data is not visible"), "{report}");
    w.assert_recovered();
    w.wait_manager_ready();
    assert_eq!(
        w.served("data/z.txt").as_deref(),
        Some("partitioned host\n")
    );
}

#[test]
fn no_snapshot_option_recovers_with_the_volume_alone() {
    let w = World::new();
    w.wait_manager_ready();
    w.write_through_server("data/x.txt", "volume only\n");
    let out = w.recover(&["--no-snapshot", "--json"]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    w.assert_recovered();
    // Machine output: the journal, every step with its state and duration.
    let j: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json prints JSON only");
    assert_eq!(j["finished"], true);
    let steps = j["steps"].as_array().unwrap();
    assert_eq!(steps.len(), cfy_recover::journal::Step::ALL.len());
    assert!(steps
        .iter()
        .all(|s| s["duration_ms"].is_u64() && s["state"] != "pending"));
    assert!(steps
        .iter()
        .any(|s| s["step"] == "create-server" && s["state"] == "done"));
    w.wait_manager_ready();
    assert_eq!(w.served("data/x.txt").as_deref(), Some("volume only\n"));
}

#[test]
fn snapshot_file_is_restored_over_the_volume() {
    let w = World::new();
    w.wait_manager_ready();
    w.write_through_server("data/v.txt", "version 1\n");
    // Take a snapshot now with the real API, then change the data: the restore of the file
    // must bring version 1 back.
    let snap = w.dir.path().join("manager.tar.zst");
    let out = w.recover(&["--take-snapshot", "--no-snapshot"]);
    assert_eq!(exit_code(&out), Some(2), "conflicting options are refused");
    take_snapshot_file(&w, &snap);
    w.write_through_server("data/v.txt", "version 2\n");
    let out = w.recover(&["--snapshot", &path_str(&snap)]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    w.assert_recovered();
    w.wait_manager_ready();
    assert_eq!(w.served("data/v.txt").as_deref(), Some("version 1\n"));
}

#[test]
fn nova_created_port_is_replaced_with_accept_new_ip() {
    let w = World::with(true, Default::default());
    w.wait_manager_ready();
    w.write_through_server("data/y.txt", "kept on the volume\n");
    let out = w.recover(&[]);
    assert_eq!(exit_code(&out), Some(2), "refused without --accept-new-ip");
    assert!(stderr(&out).contains("--accept-new-ip"), "{}", stderr(&out));
    let out = w.recover(&["--accept-new-ip", "--no-snapshot"]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    let servers = w.sim.servers();
    assert_eq!(servers.len(), 1);
    let port = servers[0].ports[0].clone();
    assert_ne!(port, w.seeded.port_id, "a replacement port");
    w.sim.with_state(|st| {
        assert!(
            !st.ports.contains_key(&w.seeded.port_id),
            "Nova's port died"
        );
        let p = &st.ports[&port];
        assert_eq!(p.ip, w.seeded.ip, "the old IP was free again and asked for");
        assert!(
            !p.nova_created,
            "the replacement is pre-created: it survives next time"
        );
        assert_eq!(
            st.fips[&w.seeded.fip_id].port_id.as_deref(),
            Some(port.as_str())
        );
    });
    w.wait_manager_ready();
    assert_eq!(
        w.served("data/y.txt").as_deref(),
        Some("kept on the volume\n")
    );
}

/// POST /snapshots?wait=true then GET the archive, with the real hooks API.
fn take_snapshot_file(w: &World, dest: &std::path::Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("http://{}:{HOOKS_PORT}", w.seeded.ip);
    rt.block_on(async {
        let m = cfy_recover::manager::Manager::new(&url, Some(&w.token_file)).unwrap();
        m.take_snapshot(dest, std::time::Duration::from_secs(30))
            .await
            .unwrap();
    });
}

#[test]
fn soft_deleted_server_is_force_deleted_to_free_port_and_volume() {
    let w = World::with(
        false,
        openstack_sim::SimConfig {
            soft_delete: true,
            ..Default::default()
        },
    );
    w.wait_manager_ready();
    w.write_through_server("data/s.txt", "soft delete\n");
    let out = w.recover(&["--no-snapshot"]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    w.assert_recovered();
    assert!(w
        .sim
        .seen()
        .iter()
        .any(|s| s.method == "POST" && s.path.ends_with("/action")));
    w.wait_manager_ready();
    assert_eq!(w.served("data/s.txt").as_deref(), Some("soft delete\n"));
}
