//! Continuous health: a real PostgreSQL frozen (SIGSTOP) under supervision turns `/readyz`
//! 503 after `failure_threshold` failed checks, with the reason in the body, and 200 again
//! after it is thawed (SIGCONT); a liveness check restarts its service; and what "ready"
//! means (docs/operations.md): completed one-shots count, no services at all does not.

#[path = "common/services.rs"]
mod services;

use std::io::{Read, Write};
use std::path::Path;

use serde_json::Value;
use services::{poll, Init, Postgres, Sandbox, PATIENCE};

/// GET `path` on the control socket: (status code, body).
fn get(sock: &Path, path: &str) -> Option<(u16, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

fn json_of(sock: &Path, path: &str) -> (u16, Value) {
    let (code, body) = get(sock, path).expect("control socket answers");
    // axum answers with Content-Length, so the body is the JSON itself.
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn wait_readyz(init: &Init, sock: &Path, want: u16) -> Value {
    poll(&format!("/readyz {want}"), PATIENCE, || {
        let (code, v) = get(sock, "/readyz")
            .map(|(c, b)| (c, serde_json::from_str::<Value>(&b).unwrap_or(Value::Null)))?;
        (code == want).then_some(v)
    });
    let _ = init;
    json_of(sock, "/readyz").1
}

fn events_with(init: &Init, service: &str, prefix: &str) -> Vec<Value> {
    init.events()
        .into_iter()
        .filter(|e| {
            e["service"] == service && e["message"].as_str().is_some_and(|m| m.starts_with(prefix))
        })
        .collect()
}

#[test]
fn frozen_postgres_turns_not_ready_and_back() {
    let sb = Sandbox::new();
    let pg = Postgres::init(&sb, "pg");
    let spec = pg.spec(
        "postgres",
        "        period: 200ms\n        timeout: 500ms\n        failure_threshold: 3\n        \
         success_threshold: 2\n",
    );
    let config = format!("supervise:\n  shutdown_deadline: 30s\n  services:\n{spec}");
    let mut init = sb.start(&config, &[], "freeze.log");
    let sock = sb.path("run/cfy-init/control.sock");
    init.wait_event("ready", "postgres", 1);
    wait_readyz(&init, &sock, 200);

    // Freeze the whole cluster (postmaster and its children share its process group).
    let pid = init.service_pid(&pg.data.display().to_string()).unwrap();
    // SAFETY: plain syscall on the group of a pid we just found.
    assert_eq!(unsafe { libc::kill(-pid, libc::SIGSTOP) }, 0);
    let v = wait_readyz(&init, &sock, 503);
    let not_ready = events_with(&init, "postgres", "not ready: readiness check failed");
    init.check(
        not_ready.len() == 1 && not_ready[0]["failures"] == 3,
        &format!("one 'not ready' after exactly 3 failures: {not_ready:?}"),
    );
    init.check(
        v["waiting"]
            .as_array()
            .is_some_and(|w| w.iter().any(|n| n == "postgres")),
        &format!("/readyz names postgres: {v}"),
    );
    let why = v["reasons"]["postgres"].as_str().unwrap_or_default();
    init.check(
        why.contains("readiness check failed") && why.contains("pg_isready"),
        &format!("/readyz says why: {v}"),
    );
    let (_, st) = json_of(&sock, "/status");
    let svc = st["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "postgres")
        .unwrap()
        .clone();
    assert_eq!(svc["state"], "RUNNING", "frozen, not restarted: {svc}");
    assert_eq!(svc["ready"], false);
    let (_, metrics) = get(&sock, "/metrics").unwrap();
    assert!(
        metrics.contains("cfy_init_service_ready{service=\"postgres\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("cfy_init_ready 0"), "{metrics}");

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(-pid, libc::SIGCONT) }, 0);
    wait_readyz(&init, &sock, 200);
    init.check(
        events_with(&init, "postgres", "ready again").len() == 1,
        "one 'ready again' after the thaw",
    );
    assert_eq!(init.service_pid(&pg.data.display().to_string()), Some(pid));
    assert_eq!(pg.psql("SELECT 1").unwrap(), "1");

    init.signal(libc::SIGTERM);
    let code = init.wait_exit().code();
    init.check(code == Some(0), &format!("exit {code:?}"));
}

#[test]
fn liveness_check_restarts_its_service() {
    let sb = Sandbox::new();
    let flag = sb.write("alive", "");
    let config =
        "supervise:\n  services:\n    - name: app\n      command: [sleep, '100000']\n      \
         startsecs: 0s\n      liveness:\n        check: {type: file, path: /alive}\n        \
         period: 100ms\n        failure_threshold: 2\n";
    let mut init = sb.start(config, &[], "live.log");
    init.wait_event("running and ready", "app", 1);
    let first = init.service_pid("sleep 100000").unwrap();
    std::fs::remove_file(&flag).unwrap();
    init.wait_event("started", "app", 2);
    std::fs::write(&flag, "").unwrap();
    let restarts: Vec<Value> = events_with(&init, "app", "liveness check failed")
        .into_iter()
        .filter(|e| e["level"] == "WARN")
        .collect();
    init.check(
        !restarts.is_empty() && restarts.iter().all(|e| e["failures"] == 2),
        &format!("restarted after 2 failures in a row: {restarts:?}"),
    );
    let second = poll("the restarted app", PATIENCE, || {
        init.service_pid("sleep 100000").filter(|p| *p != first)
    });
    assert_ne!(first, second);
    init.signal(libc::SIGTERM);
    assert_eq!(init.wait_exit().code(), Some(0));
}

#[test]
fn what_ready_means() {
    let sb = Sandbox::new();
    let sock = sb.path("run/cfy-init/control.sock");

    // No services at all: not ready, and it says why.
    let mut init = sb.start("supervise:\n  services: []\n", &[], "none.log");
    let v = poll("a /readyz answer", PATIENCE, || {
        get(&sock, "/readyz").filter(|(_, b)| b.contains("no services defined"))
    });
    assert_eq!(v.0, 503, "{}", v.1);
    init.signal(libc::SIGTERM);
    assert_eq!(init.wait_exit().code(), Some(0));

    // ... unless configured otherwise.
    let mut init = sb.start(
        "supervise:\n  ready_without_services: true\n  services: []\n",
        &[],
        "none-ok.log",
    );
    wait_readyz(&init, &sock, 200);
    init.signal(libc::SIGTERM);
    assert_eq!(init.wait_exit().code(), Some(0));

    // A one-shot that completed and a `restart: never` service that exited 0 count as ready.
    let config = "supervise:\n  services:\n    - name: setup\n      kind: oneshot\n      \
                  command: [/bin/true]\n      startsecs: 0s\n    - name: starter\n      \
                  command: [/bin/true]\n      restart: never\n      startsecs: 0s\n    \
                  - name: app\n      command: [sleep, '100000']\n      startsecs: 0s\n      \
                  depends_on: [setup]\n";
    let mut init = sb.start(config, &[], "done.log");
    wait_readyz(&init, &sock, 200);
    let (_, st) = json_of(&sock, "/status");
    for name in ["setup", "starter"] {
        let svc = st["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap();
        assert_eq!(svc["state"], "EXITED", "{svc}");
        assert_eq!(svc["ready"], true, "{svc}");
        assert!(svc["reason"].as_str().is_some(), "{svc}");
    }
    init.signal(libc::SIGTERM);
    assert_eq!(init.wait_exit().code(), Some(0));
}
