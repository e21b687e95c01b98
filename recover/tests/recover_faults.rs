//! API faults at every step: 5xx, timeouts, 409, dropped connections (before or after the
//! work is done), slow transitions. Recovery completes, or stops safe with a clear message
//! and a journal that `resume` finishes; never a second server.

mod common;

use std::time::Duration;

use common::*;
use openstack_sim::{FaultKind, FaultRule, SimConfig};

fn rule(method: &str, path: &str, kind: FaultKind) -> FaultRule {
    FaultRule::new(Some(method), path, kind)
}

/// Run a recovery with `faults` armed; it must complete in one run.
fn completes_despite(name: &str, faults: Vec<FaultRule>) {
    let w = World::new();
    w.wait_manager_ready();
    w.write_through_server("data/f.txt", "through faults\n");
    for f in faults {
        w.sim.add_fault(f);
    }
    let out = w.recover(&[]);
    assert_eq!(exit_code(&out), Some(0), "{name}: {}", stderr(&out));
    w.assert_recovered();
    let spent = w
        .sim
        .shared
        .faults
        .lock()
        .unwrap()
        .iter()
        .all(|f| f.seen > f.skip);
    assert!(spent, "{name}: every fault was actually hit");
    w.wait_manager_ready();
    assert_eq!(
        w.served("data/f.txt").as_deref(),
        Some("through faults\n"),
        "{name}"
    );
}

#[test]
fn transient_faults_on_reads_and_idempotent_calls() {
    use FaultKind::*;
    let cases: Vec<(&str, Vec<FaultRule>)> = vec![
        (
            "keystone 503",
            vec![rule("POST", "/auth/tokens", Status { status: 503 }).times(2)],
        ),
        (
            "token expired: 401 then re-authentication",
            vec![rule("GET", "/servers/", Status { status: 401 }).skip(4)],
        ),
        (
            "server reads 500",
            vec![rule("GET", "/servers/", Status { status: 500 })
                .skip(2)
                .times(3)],
        ),
        (
            "port read dropped",
            vec![rule("GET", "/v2.0/ports/", Drop).times(2)],
        ),
        (
            "volume read times out",
            vec![rule("GET", "/volumes/", Delay { ms: 2500 })],
        ),
        (
            "floating IP update dropped",
            vec![rule("PUT", "/floatingips/", Drop)],
        ),
        (
            "floating IP update 502 after doing it",
            vec![rule("PUT", "/floatingips/", StatusAfter { status: 502 }).skip(1)],
        ),
        (
            "delete 503 twice",
            vec![rule("DELETE", "/servers/srv-", Status { status: 503 }).times(2)],
        ),
        (
            "detach done but answer lost",
            vec![rule("DELETE", "/os-volume_attachments/", DropAfter)],
        ),
        (
            "port detach done but answer lost",
            vec![rule("DELETE", "/os-interface/", DropAfter)],
        ),
        // DELETEs under /servers: volume detach, port detach, then the server itself.
        (
            "delete done but answer lost",
            vec![rule("DELETE", "/servers/srv-", DropAfter).skip(2)],
        ),
    ];
    for (name, faults) in cases {
        completes_despite(name, faults);
    }
}

#[test]
fn faults_on_creating_calls_never_make_a_second_server() {
    use FaultKind::*;
    let cases: Vec<(&str, Vec<FaultRule>)> = vec![
        (
            "create 500 after creating",
            vec![rule(
                "POST",
                "/compute/v2.1/servers",
                StatusAfter { status: 500 },
            )],
        ),
        (
            "create answer dropped after creating",
            vec![rule("POST", "/compute/v2.1/servers", DropAfter)],
        ),
        (
            "create 503 before",
            vec![rule("POST", "/compute/v2.1/servers", Status { status: 503 }).times(2)],
        ),
        (
            "create 409",
            vec![rule(
                "POST",
                "/compute/v2.1/servers",
                Status { status: 409 },
            )],
        ),
        (
            "create times out but happens",
            vec![rule("POST", "/compute/v2.1/servers", Delay { ms: 2500 })],
        ),
        (
            "attach 502 after attaching",
            vec![rule(
                "POST",
                "/os-volume_attachments",
                StatusAfter { status: 502 },
            )],
        ),
        (
            "attach 409",
            vec![rule(
                "POST",
                "/os-volume_attachments",
                Status { status: 409 },
            )],
        ),
        (
            "detach volume 409",
            vec![rule(
                "DELETE",
                "/os-volume_attachments/",
                Status { status: 409 },
            )],
        ),
        (
            "detach port 409",
            vec![rule("DELETE", "/os-interface/", Status { status: 409 })],
        ),
    ];
    for (name, faults) in cases {
        completes_despite(name, faults);
    }
}

#[test]
fn persistent_fault_stops_safe_and_resume_finishes() {
    let w = World::new();
    w.wait_manager_ready();
    w.write_through_server("data/p.txt", "persistent fault\n");
    // Neutron port reads fail for good once the server is deleted.
    w.sim.add_fault(
        rule("GET", "/v2.0/ports/", FaultKind::Status { status: 500 })
            .skip(3)
            .times(10_000),
    );
    let out = w.recover(&[]);
    assert_eq!(exit_code(&out), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(
        err.contains("cfy-recover resume"),
        "says how to continue: {err}"
    );
    let j = w.journal();
    assert_eq!(j["finished"], false);
    assert!(j["last_error"].as_str().unwrap().contains("500"), "{j:#}");
    assert!(w.sim.servers().len() <= 1, "never two servers");
    w.sim.clear_faults();
    let out = w.resume();
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    w.assert_recovered();
    w.wait_manager_ready();
    assert_eq!(
        w.served("data/p.txt").as_deref(),
        Some("persistent fault\n")
    );
}

#[test]
fn new_server_in_error_stops_safe_then_resume_boots_another() {
    let w = World::new();
    w.wait_manager_ready();
    w.write_through_server("data/e.txt", "new server failed once\n");
    // Make the new server go ERROR as soon as it exists: watch for it from a thread.
    let shared = w.sim.shared.clone();
    let old = w.seeded.server_id.clone();
    let watcher = std::thread::spawn(move || {
        for _ in 0..600 {
            let mut st = shared.state.lock().unwrap();
            if let Some(s) = st.servers.values_mut().find(|s| s.id != old) {
                s.status = "ERROR".into();
                s.task_state = None;
                s.fault = Some("No valid host was found.".into());
                return s.id.clone();
            }
            drop(st);
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no new server appeared");
    });
    let out = w.recover(&["--no-snapshot"]);
    let failed = watcher.join().unwrap();
    assert_eq!(exit_code(&out), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("No valid host was found"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        w.sim.servers().len(),
        1,
        "the failed server is left, not duplicated"
    );
    // The operator deletes it (through the API, as they would), then resumes.
    w.sim.with_state(|st| {
        let s = st.servers.remove(&failed).unwrap();
        for p in s.ports {
            let p = st.ports.get_mut(&p).unwrap();
            p.device_id.clear();
            p.host_id.clear();
        }
    });
    let out = w.resume();
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    w.assert_recovered();
    w.wait_manager_ready();
    assert_eq!(
        w.served("data/e.txt").as_deref(),
        Some("new server failed once\n")
    );
}

#[test]
fn slow_transitions_complete() {
    let w = World::with(
        false,
        SimConfig {
            build: Duration::from_millis(2500),
            delete: Duration::from_millis(2000),
            attach: Duration::from_millis(1500),
            detach: Duration::from_millis(1500),
            fip: Duration::from_millis(1000),
            ..Default::default()
        },
    );
    w.wait_manager_ready();
    let out = w.recover(&[]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    w.assert_recovered();
}

#[test]
fn rate_limits_are_waited_out_as_retry_after_says() {
    use FaultKind::*;
    // 429 on reads during plan, 413 (Nova's over-limit) on the create itself, 503 with
    // Retry-After on a detach: all waited out, the create never doubled.
    completes_despite(
        "rate limited",
        vec![
            rule(
                "GET",
                "/servers/",
                Throttle {
                    status: 429,
                    retry_after_s: 1,
                },
            )
            .times(2),
            rule(
                "POST",
                "/servers",
                Throttle {
                    status: 413,
                    retry_after_s: 1,
                },
            ),
            rule(
                "DELETE",
                "/os-volume_attachments",
                Throttle {
                    status: 503,
                    retry_after_s: 1,
                },
            ),
        ],
    );
}

#[test]
fn a_rate_limit_longer_than_the_budget_stops_before_any_change() {
    let w = World::new();
    w.wait_manager_ready();
    w.sim.add_fault(
        rule(
            "GET",
            "/servers/",
            FaultKind::Throttle {
                status: 429,
                retry_after_s: 3600,
            },
        )
        .times(5),
    );
    let out = w.recover(&[]);
    assert_eq!(exit_code(&out), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("429"), "{}", stderr(&out));
    assert!(
        w.sim.seen().iter().all(|s| !s.is_mutating()),
        "nothing changed"
    );
}

#[test]
fn a_wait_outlasts_a_poll_that_fails_past_its_retries() {
    // The new server boots for 8 s. As soon as it exists, its reads answer 500 twelve times
    // in a row: every attempt of two whole calls (six each), about 1.5 s each. The wait
    // for ACTIVE counts those as missed looks and goes on; it does not end the recovery.
    let w = World::with(
        false,
        SimConfig {
            build: Duration::from_secs(8),
            ..Default::default()
        },
    );
    w.wait_manager_ready();
    let args = w.recover_args(&[]);
    let child = w
        .cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let seeded = w.seeded.server_id.clone();
    let mut new_id = None;
    poll("the new server to exist", Duration::from_secs(30), || {
        new_id = w
            .sim
            .with_state(|st| st.servers.keys().find(|id| **id != seeded).cloned());
        new_id.is_some()
    });
    let path = format!("/servers/{}", new_id.unwrap());
    w.sim
        .add_fault(rule("GET", &path, FaultKind::Status { status: 500 }).times(12));
    let out = child.wait_with_output().unwrap();
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a poll failed; polling on"),
        "{}",
        stderr(&out)
    );
    let hit = w.sim.shared.faults.lock().unwrap()[0].seen;
    assert!(hit >= 12, "all twelve faults were served ({hit} seen)");
    w.assert_recovered();
}
