//! Bad input: a clear error (exit 2) before any mutating call, and the simulator saw none.

mod common;

use common::*;

fn refused(w: &World, out: &std::process::Output, needle: &str) {
    assert_eq!(exit_code(out), Some(2), "refused: {}", stderr(out));
    let err = stderr(out);
    assert!(
        err.contains(needle),
        "error names the problem ({needle}): {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let mutating: Vec<_> = w
        .sim
        .seen()
        .into_iter()
        .filter(|s| s.is_mutating())
        .collect();
    assert!(mutating.is_empty(), "no mutating call: {mutating:?}");
    assert!(
        !err.contains(openstack_sim::PASSWORD),
        "no secret in errors"
    );
}

#[test]
fn bad_inputs_are_refused_before_any_change() {
    let w = World::new();
    w.wait_manager_ready();

    let mut args = w.recover_args(&[]);
    args[2] = "no-such-manager".into();
    let out = w.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    refused(&w, &out, "no server named or with id `no-such-manager`");

    let out = w
        .cmd(&["plan", "--server", "cfy-manager"])
        .env_remove("OS_AUTH_URL")
        .output()
        .unwrap();
    refused(&w, &out, "no OpenStack credentials");

    let out = w
        .cmd(&["plan", "--server", "cfy-manager"])
        .env("OS_PASSWORD", "wrong")
        .output()
        .unwrap();
    refused(&w, &out, "authentication");

    let out = w.run(&["recover", "--server", "cfy-manager"]);
    refused(&w, &out, "--yes");

    let garbage = w.dir.path().join("garbage.tar.zst");
    std::fs::write(&garbage, b"this is not an archive at all").unwrap();
    let out = w.recover(&["--snapshot", &path_str(&garbage)]);
    refused(&w, &out, "not a usable snapshot archive");

    let out = w.recover(&["--snapshot", "/nonexistent/snap.tar.zst"]);
    refused(&w, &out, "/nonexistent/snap.tar.zst");

    let out = w.recover(&["--floating-ip", "198.51.100.77"]);
    refused(&w, &out, "floating IP 198.51.100.77 does not exist");

    // A floating IP bound to somebody else's port.
    w.sim.with_state(|st| {
        st.ports.insert(
            "port-other".into(),
            openstack_sim::state::SPort {
                id: "port-other".into(),
                name: "other".into(),
                network_id: "net-mgmt".into(),
                subnet_id: "subnet-mgmt".into(),
                ip: "10.9.9.9".into(),
                mac: "fa:16:3e:99:99:99".into(),
                device_id: "srv-other".into(),
                device_owner: "compute:nova".into(),
                host_id: "compute-2".into(),
                status: "ACTIVE".into(),
                created_at: "2024-01-01T00:00:00Z".into(),
                nova_created: false,
                security_groups: vec![],
                description: String::new(),
                revision: 1,
            },
        );
        st.fips.insert(
            "fip-other".into(),
            openstack_sim::state::SFip {
                id: "fip-other".into(),
                address: "198.51.100.5".into(),
                port_id: Some("port-other".into()),
                fixed_ip: Some("10.9.9.9".into()),
                status: "ACTIVE".into(),
            },
        );
    });
    let out = w.recover(&["--floating-ip", "198.51.100.5"]);
    refused(&w, &out, "bound to port port-other");

    let out = w.recover(&["--take-snapshot", "--manager-url", "http://127.0.0.1:9"]);
    refused(&w, &out, "does not answer");

    // The volume is also attached to another server.
    let vol = w.seeded.volume_id.clone();
    w.sim
        .with_state(|st| st.volumes.get_mut(&vol).unwrap().server = Some("srv-other".into()));
    let out = w.recover(&[]);
    refused(&w, &out, "also attached to srv-other");
    w.sim.with_state(|st| {
        st.volumes.get_mut(&vol).unwrap().server = Some(w.seeded.server_id.clone())
    });

    // Nova lists the port, Neutron says another server holds it.
    let port = w.seeded.port_id.clone();
    w.sim
        .with_state(|st| st.ports.get_mut(&port).unwrap().device_id = "srv-other".into());
    let out = w.recover(&[]);
    refused(&w, &out, "is attached to srv-other");
    w.sim
        .with_state(|st| st.ports.get_mut(&port).unwrap().device_id = w.seeded.server_id.clone());

    // The key pair is gone: the new server could not boot, so nothing may be deleted.
    w.sim.with_state(|st| st.keypairs.clear());
    let out = w.recover(&[]);
    refused(&w, &out, "key pair `ops`");

    // Nothing changed: the manager still runs where it was.
    assert_eq!(w.sim.servers().len(), 1);
    assert_eq!(w.sim.servers()[0].id, w.seeded.server_id);
    assert!(
        !w.state_dir.join("journal.json").exists(),
        "no journal for refused runs"
    );
}

#[test]
fn nova_created_port_is_refused_with_the_reason() {
    let w = World::with(true, Default::default());
    let out = w.recover(&[]);
    refused(&w, &out, "was created by Nova with the server");
}

#[test]
fn clouds_yaml_and_application_credentials_work() {
    let w = World::new();
    w.wait_manager_ready();
    let yaml = format!(
        "clouds:\n  sim:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: {}\n      application_credential_id: {}\n      application_credential_secret: {}\n",
        w.sim.url.clone() + "/identity",
        openstack_sim::APP_CRED_ID,
        openstack_sim::APP_CRED_SECRET
    );
    std::fs::write(w.dir.path().join("clouds.yaml"), yaml).unwrap();
    let out = w
        .cmd(&[
            "--os-cloud",
            "sim",
            "plan",
            "--server",
            "cfy-manager",
            "--json",
        ])
        .env_remove("OS_AUTH_URL")
        .env_remove("OS_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["journal"]["old_server"]["id"],
        w.seeded.server_id.as_str()
    );
    let out = w
        .cmd(&["--os-cloud", "nope", "plan", "--server", "cfy-manager"])
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), Some(2));
    assert!(
        stderr(&out).contains("cloud `nope` not found"),
        "{}",
        stderr(&out)
    );
}
