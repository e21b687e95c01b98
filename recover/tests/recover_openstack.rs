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
    os().cli(
        "cfy-demo-admin",
        &[
            "server",
            "set",
            "--state",
            "error",
            "--auto-approve",
            &d.server_id,
        ],
    );
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
