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
