//! 1 000 concurrent `/status` requests while a snapshot is in progress all get answers;
//! a second snapshot or a restore meanwhile gets 409; metrics show the finished job.

#[path = "common/hooks.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use cfy_init::hooks::{self, BootState, NoServices};
use common::{env, get, populate, request, To};
use hyper::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_status_requests_during_a_snapshot() {
    // Client and server share this process: 2 000 descriptors at once.
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 8192, 8192).unwrap();
    // The pre command holds the snapshot in its quiesce phase until `go` exists, so the
    // requests below provably overlap a running snapshot.
    let e = env("quiesce:\n  services: []\n  pre: [[/bin/sh, -c, \"while [ ! -e {store}/../go ]; do sleep 0.05; done\"]]");
    populate(&e.store());
    let boot = BootState::new();
    boot.set_complete();
    let running = hooks::start(e.ctx.clone(), Arc::new(NoServices), boot)
        .await
        .unwrap();
    let unix = To::Unix(running.socket.clone());
    tokio::spawn(running.wait());

    let r = request(&unix, Method::POST, "/snapshots", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let job = r.json()["id"].as_str().unwrap().to_string();

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let to = unix.clone();
        tasks.spawn(async move { get(&to, "/status", None).await });
    }
    let mut answered = 0;
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        let v = r.json();
        assert_eq!(v["jobs"][0]["id"], job.as_str());
        assert_eq!(v["jobs"][0]["state"], "running");
        answered += 1;
    }
    assert_eq!(answered, 1000);

    let r = request(&unix, Method::POST, "/snapshots", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("another snapshot or restore is running"));
    let r = request(&unix, Method::POST, "/restore", &[], Body::from("x")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    std::fs::write(e.root().join("go"), "").unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = get(&unix, &format!("/jobs/{job}"), None).await.json();
        if v["state"] == "succeeded" {
            assert!(v["pause_ms"].as_u64().is_some());
            break;
        }
        assert_eq!(v["state"], "running", "{v}");
        assert!(std::time::Instant::now() < end, "snapshot did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = String::from_utf8(get(&unix, "/metrics", None).await.body.to_vec()).unwrap();
    assert!(
        m.contains("cfy_init_snapshot_jobs_total{result=\"snapshot_ok\"} 1"),
        "{m}"
    );
    assert!(m.contains("cfy_init_ready 1"), "{m}");
    let size = m
        .lines()
        .find(|l| l.starts_with("cfy_init_snapshot_last_size_bytes "))
        .unwrap();
    assert_ne!(size, "cfy_init_snapshot_last_size_bytes 0", "{m}");
    assert!(m.ends_with("# EOF\n"));
}
