//! End to end against a real OpenStack (scripts/openstack.sh: Keystone, Nova on the fake virt
//! driver, Neutron ML2 linuxbridge, Cinder's fake driver), the VM played by a real cfy-init
//! (tests/openstack/guest.rs). Every end state is checked with the real `openstack` CLI.
//! Each test prints its steps' durations and cfy-recover's own overhead (`bench` lines).

mod openstack;

use std::os::unix::process::ExitStatusExt;

use openstack::*;

fn step<'a>(j: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap()
}

#[test]
fn happy_path_keeps_port_ip_volume_floating_ip_and_data() {
    let _g = shared();
    let d = Deployed::new("happy");
    d.write_through_server("data/hello.txt", "written through the old server\n");
    assert_eq!(
        d.served("data/hello.txt").as_deref(),
        Some("written through the old server\n")
    );
    let plan = d.run(&[
        "plan",
        "--server",
        &d.name,
        "--manager-address",
        "fixed",
        "--json",
    ]);
    assert_eq!(exit_code(&plan), Some(0), "{}", stderr(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["manager_answers"], true, "{plan:#}");

    let out = d.recover(&[]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    let new_id = d.assert_recovered();
    let j = d.journal();
    assert_eq!(step(&j, "snapshot")["state"], "done", "{j:#}");
    assert_eq!(step(&j, "detach-volumes")["state"], "done", "{j:#}");
    assert_eq!(step(&j, "restore")["state"], "done", "{j:#}");
    d.wait_manager_ready();
    assert_eq!(d.guests.running_server().as_deref(), Some(new_id.as_str()));
    assert_eq!(
        d.served("data/hello.txt").as_deref(),
        Some("written through the old server\n"),
        "the new guest serves the old one's data"
    );
    d.print_benchmark("happy");
}

#[test]
fn server_in_error_recovers_with_the_volume_alone() {
    let _g = shared();
    let d = Deployed::new("error");
    d.write_through_server("data/state.txt", "before the failure\n");
    d.set_server_error();
    until(
        "the guest to die with its server",
        std::time::Duration::from_secs(30),
        || d.guests.running_server().is_none().then_some(()),
    );
    let out = d.recover(&[]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    d.assert_recovered();
    let j = d.journal();
    assert_eq!(
        step(&j, "snapshot")["state"],
        "skipped",
        "the dead manager cannot snapshot"
    );
    assert_eq!(
        step(&j, "detach-volumes")["state"],
        "skipped",
        "Nova refuses detach in ERROR"
    );
    d.wait_manager_ready();
    assert_eq!(
        d.served("data/state.txt").as_deref(),
        Some("before the failure\n")
    );
    d.print_benchmark("error");
}

#[test]
fn kill_9_at_each_step_then_resume() {
    let _g = shared();
    let d = Deployed::new("crash");
    d.write_through_server("data/crash.txt", "survives every crash\n");
    // One run, killed (SIGKILL at the crash point) after every mutating step in turn,
    // each time resumed until the next one.
    let points = [
        "after:snapshot",
        "after:disassociate-floating-ip",
        "after:detach-volumes",
        "after:detach-ports",
        "after:delete-server",
        "after:create-server",
        "after:attach-volumes",
        "after:associate-floating-ip",
        "after:restore",
    ];
    let args = d.recover_args(&[]);
    let out = d
        .cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("CFY_RECOVER_CRASH_AT", points[0])
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    for p in &points[1..] {
        let out = d
            .cmd(&["resume"])
            .env("CFY_RECOVER_CRASH_AT", p)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{p}: {}", stderr(&out));
    }
    let out = d.run(&["resume"]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    d.assert_recovered();
    d.wait_manager_ready();
    assert_eq!(
        d.served("data/crash.txt").as_deref(),
        Some("survives every crash\n")
    );
    d.print_benchmark("kill-9");
}

#[test]
fn server_already_deleted_is_rebuilt_from_the_inventory_with_the_same_ip() {
    let _g = shared();
    let d = Deployed::new("gone");
    d.write_through_server("data/gone.txt", "the server was deleted by hand\n");
    let inv = d.save_inventory();
    // The server is deleted through the API (the pre-created port and the volume survive).
    os().cli("cfy-member", &["server", "delete", "--wait", &d.server_id]);
    let without = d.recover(&[]);
    assert_eq!(
        exit_code(&without),
        Some(2),
        "without an inventory: refused"
    );
    assert!(
        stderr(&without).contains("--inventory"),
        "{}",
        stderr(&without)
    );
    let out = d.recover(&["--inventory", inv.to_str().unwrap()]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    d.assert_recovered();
    let j = d.journal();
    assert_eq!(
        step(&j, "delete-server")["note"]
            .as_str()
            .map(|n| n.contains("already gone")),
        Some(true),
        "{j:#}"
    );
    d.wait_manager_ready();
    assert_eq!(
        d.served("data/gone.txt").as_deref(),
        Some("the server was deleted by hand\n")
    );
    // The inventory now names the new server.
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&inv).unwrap()).unwrap();
    assert_eq!(saved["server"]["id"], j["new_server_id"]);
    d.print_benchmark("gone");
}

#[test]
fn server_and_port_deleted_port_recreated_with_the_same_ip_or_refused_when_taken() {
    let _g = shared();
    let d = Deployed::new("noport");
    d.write_through_server("data/p.txt", "port gone too\n");
    let inv = d.save_inventory();
    os().cli("cfy-member", &["server", "delete", "--wait", &d.server_id]);
    os().cli("cfy-member", &["port", "delete", &d.port_id]);
    // Someone takes the IP: the plan stops before any change, naming the holder.
    let squatter = os().member(&[
        "port",
        "create",
        "--network",
        "demo-net",
        "--fixed-ip",
        &format!("subnet={},ip-address={}", d.subnet_id, d.ip),
        &format!("{}-squatter", d.name),
    ]);
    let squatter_id = squatter["id"].as_str().unwrap().to_owned();
    let out = d.recover(&["--inventory", inv.to_str().unwrap()]);
    assert_eq!(exit_code(&out), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&squatter_id),
        "names the holder: {}",
        stderr(&out)
    );
    assert!(
        !d.state_dir.join("journal.json").exists(),
        "nothing started"
    );
    os().cli("cfy-member", &["port", "delete", &squatter_id]);
    // Free again: a new port with the same IP.
    let out = d.recover(&["--inventory", inv.to_str().unwrap()]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    let j = d.journal();
    let new_port = j["ports"][0]["new_id"].as_str().unwrap().to_owned();
    let port = os().member(&["port", "show", &new_port]);
    assert_eq!(
        port["fixed_ips"][0]["ip_address"],
        d.ip.as_str(),
        "same fixed IP"
    );
    assert_eq!(port["device_id"], j["new_server_id"]);
    let fip = os().member(&["floating", "ip", "show", &d.fip_id]);
    assert_eq!(
        fip["port_id"],
        new_port.as_str(),
        "the floating IP on the new port"
    );
    d.wait_manager_ready();
    assert_eq!(d.served("data/p.txt").as_deref(), Some("port gone too\n"));
    os().cli_raw(
        "cfy-member",
        &[
            "server",
            "delete",
            "--wait",
            j["new_server_id"].as_str().unwrap(),
        ],
    );
    os().cli_raw("cfy-member", &["port", "delete", &new_port]);
    d.print_benchmark("port-gone");
}

#[test]
fn status_tells_a_killed_run_from_a_live_one() {
    let _g = shared();
    let d = Deployed::new("status");
    let args = d.recover_args(&["--no-snapshot"]);
    let out = d
        .cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("CFY_RECOVER_CRASH_AT", "before:create-server")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9));
    let st = d.run(&["status"]);
    let text = String::from_utf8_lossy(&st.stdout).to_string();
    assert!(text.contains("process: none"), "{text}");
    let out = d.run(&["resume"]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        report.contains("interrupted"),
        "the killed attempt is listed: {report}"
    );
    assert!(report.contains("2 run(s)"), "{report}");
    d.assert_recovered();
}

#[test]
fn a_locked_server_is_refused_before_any_change_then_recovered_once_unlocked() {
    let _g = shared();
    let d = Deployed::new("locked");
    os().cli(
        "cfy-member",
        &["server", "lock", "--reason", "maintenance", &d.server_id],
    );
    let out = d.recover(&[]);
    assert_eq!(exit_code(&out), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is locked (maintenance)"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("server unlock"),
        "says what to change"
    );
    let s = os().member(&["server", "show", &d.server_id]);
    assert_eq!(s["status"], "ACTIVE", "nothing was changed");
    os().cli("cfy-member", &["server", "unlock", &d.server_id]);
    let out = d.recover(&[]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    d.assert_recovered();
}

#[test]
fn an_exhausted_instances_quota_is_refused_before_any_change() {
    // Nova takes no quota below the usage, so: the server is gone (deleted by hand) and the
    // project's instances quota is then set to what is left in use: no room for the new one.
    let d = Deployed::new("quota");
    let inv = d.save_inventory();
    // The quota is the project's: no other test may boot meanwhile.
    let _g = exclusive();
    let os = os();
    os.cli("cfy-member", &["server", "delete", "--wait", &d.server_id]);
    let rows = |v: serde_json::Value, key: &str, name: &str, val: &str| -> Option<i64> {
        v.as_array()?.iter().find(|r| r[key] == name)?[val].as_i64()
    };
    let limit = rows(
        os.json("cfy-admin", &["quota", "show", "demo"]),
        "Resource",
        "instances",
        "Limit",
    )
    .unwrap_or(10)
    .to_string();
    // What the project uses: its servers (Nova counts instances per project).
    let used = os
        .member(&["server", "list"])
        .as_array()
        .unwrap()
        .len()
        .to_string();
    os.cli("cfy-admin", &["quota", "set", "--instances", &used, "demo"]);
    let out = d.recover(&["--inventory", inv.to_str().unwrap()]);
    os.cli(
        "cfy-admin",
        &["quota", "set", "--instances", &limit, "demo"],
    );
    assert_eq!(exit_code(&out), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("compute quota has no room") && err.contains("quota set --instances"),
        "says what to change: {err}"
    );
    assert!(
        !d.state_dir.join("journal.json").exists(),
        "nothing started"
    );
    let out = d.recover(&["--inventory", inv.to_str().unwrap()]);
    assert_eq!(
        exit_code(&out),
        Some(0),
        "with room again: {}",
        stderr(&out)
    );
    d.assert_recovered();
}

#[test]
fn a_nova_created_port_is_refused_then_replaced_with_accept_new_ip() {
    let _g = shared();
    let d = Deployed::with_nova_port("novaport");
    d.write_through_server("data/n.txt", "on Nova's port\n");
    let out = d.recover(&[]);
    assert_eq!(exit_code(&out), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("created by Nova"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--accept-new-ip"),
        "says what to change"
    );
    let out = d.recover(&["--accept-new-ip"]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    let j = d.journal();
    let new_port = j["ports"][0]["new_id"].as_str().unwrap().to_owned();
    let new_id = j["new_server_id"].as_str().unwrap().to_owned();
    let list = os().member(&["server", "list", "--name", &format!("^{}$", d.name)]);
    assert_eq!(list.as_array().unwrap().len(), 1, "one server");
    let port = os().member(&["port", "show", &new_port]);
    assert_eq!(port["device_id"], new_id.as_str());
    assert_eq!(
        port["fixed_ips"][0]["ip_address"],
        d.ip.as_str(),
        "the old IP was asked for, and free"
    );
    let vol = os().member(&["volume", "show", &d.volume_id]);
    assert_eq!(vol["attachments"][0]["server_id"], new_id.as_str());
    let fip = os().member(&["floating", "ip", "show", &d.fip_id]);
    assert_eq!(fip["port_id"], new_port.as_str());
    d.wait_manager_ready();
    assert_eq!(d.served("data/n.txt").as_deref(), Some("on Nova's port\n"));
    os().cli_raw("cfy-member", &["server", "delete", "--wait", &new_id]);
    os().cli_raw("cfy-member", &["port", "delete", &new_port]);
    d.print_benchmark("nova-port");
}

/// The copy cfy-init's `snapshot.remote` keeps off the host: the guest's own snapshot, in a
/// real Swift (scripts/openstack/swift.sh, on the same Keystone), with its sha256 recorded.
fn copy_off_host(d: &Deployed, container: &str) {
    let out = std::process::Command::new("flock")
        .args(["-o", UP_LOCK, "bash"])
        .arg(repo_root().join("scripts/openstack/swift.sh"))
        .arg("up")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "swift.sh up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("http://{}:{HOOKS_PORT}", d.ip);
        let m = cfy_recover::manager::Manager::new(&url, Some(&d.token_file)).unwrap();
        let archive = d.dir.path().join("copy.tar.zst");
        let sha = m
            .take_snapshot(&archive, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let creds = cfy_openstack::creds::load_cloud("cfy-member", Some(&os().clouds), &|k| {
            std::env::var(k).ok()
        })
        .unwrap();
        let session =
            cfy_openstack::session::Session::new(creds, std::time::Duration::from_secs(30))
                .unwrap();
        let swift = cfy_openstack::swift::Swift::new(
            std::sync::Arc::new(session),
            cfy_openstack::swift::RetryPolicy::default(),
        )
        .unwrap();
        swift.ensure_container(container).await.unwrap();
        let sha = (!sha.is_empty()).then_some(sha);
        swift
            .upload(
                &archive,
                container,
                "snapshot-1.tar.zst",
                1 << 20,
                d.dir.path(),
                sha.as_deref(),
            )
            .await
            .unwrap();
    });
}

#[test]
fn a_dead_manager_is_restored_from_its_newest_copy_in_swift() {
    let _g = shared();
    let d = Deployed::new("remote");
    d.wait_manager_ready();
    d.write_through_server("data/copy.txt", "in the off-host copy\n");
    let container = format!("cfy-recover-test-{}", std::process::id());
    copy_off_host(&d, &container);
    // Written after the copy: only a restore of the copy brings the old content back.
    d.write_through_server("data/copy.txt", "changed after the copy\n");
    d.set_server_error();
    until(
        "the guest to die with its server",
        std::time::Duration::from_secs(30),
        || d.guests.running_server().is_none().then_some(()),
    );
    let out = d.recover(&["--remote-snapshots", &container]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    d.assert_recovered();
    let j = d.journal();
    let snap = step(&j, "snapshot");
    assert_eq!(snap["state"], "done", "{snap:#}");
    assert!(
        snap["note"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("swift://{container}/snapshot-1.tar.zst")),
        "{snap:#}"
    );
    d.wait_manager_ready();
    assert_eq!(
        d.served("data/copy.txt").as_deref(),
        Some("in the off-host copy\n"),
        "the copy was restored"
    );
    d.print_benchmark("remote-copy");
}
