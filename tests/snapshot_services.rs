//! Snapshot and restore against services really supervised by `cfy-init run`, driven by
//! the CLI client: a restore whose service never becomes ready is rolled back, a good one
//! sticks; status / ready / snapshot create|list|download|delete / restore FILE|ID.

#[path = "common/hooks.rs"]
mod common;

use std::time::Duration;

use axum::body::Body;
use common::{env_with, fingerprint, get, request, wait_ready, Init};
use hyper::{Method, StatusCode};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn app_ready(to: &common::To) -> bool {
    let v = get(to, "/status", None).await.json();
    v["services"][0]["ready"] == true && v["services"][0]["state"] == "RUNNING"
}

async fn wait_app_ready(to: &common::To) {
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !app_ready(to).await {
        assert!(
            std::time::Instant::now() < end,
            "app not ready: {}",
            get(to, "/status", None).await.json()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_restore_rolls_back_and_good_one_sticks() {
    // The service only stays up while the store holds `good`.
    let e = env_with(
        "quiesce:\n  services: [app]\nready_timeout: 6s",
        "supervise:\n  services:\n    - name: app\n      command: [/bin/sh, -c, \"test -f {store}/good && exec sleep 1000\"]\n      startsecs: 1s\n      startretries: 2\n      backoff: {initial: 100ms, max: 200ms}\n",
    );
    let store = e.store();
    std::fs::write(store.join("good"), "").unwrap();
    std::fs::write(store.join("data"), "v1").unwrap();
    let init = Init::start(&e);
    let to = init.to();
    wait_ready(&to, Duration::from_secs(30)).await;
    wait_app_ready(&to).await;

    // Snapshot A (good, v1) through the CLI.
    let out = init.cli(&["snapshot", "create"]);
    assert!(out.status.success(), "{}{}", stderr(&out), init.log());
    let id_a = stdout(&out)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    assert!(stdout(&out).contains("services paused"), "{}", stdout(&out));
    wait_app_ready(&to).await;

    // Snapshot B lacks `good`: the service cannot come back after it.
    std::fs::remove_file(store.join("good")).unwrap();
    let r = request(
        &to,
        Method::POST,
        "/snapshots?wait=true",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id_b = r.json()["id"].as_str().unwrap().to_string();

    // Live store: good, v2, service up again.
    std::fs::write(store.join("good"), "").unwrap();
    std::fs::write(store.join("data"), "v2").unwrap();
    let r = request(&to, Method::POST, "/services/app/start", &[], Body::empty()).await;
    assert!(
        r.status == StatusCode::OK || r.status == StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    wait_app_ready(&to).await;
    let before = fingerprint(&store);

    // Restoring B: the service never becomes ready -> rolled back, data as before.
    let out = init.cli(&["restore", &id_b]);
    assert!(!out.status.success(), "restore of B should fail");
    assert!(
        stderr(&out).contains("previous store was put back"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("not ready within"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fingerprint(&store), before);
    assert_eq!(std::fs::read_to_string(store.join("data")).unwrap(), "v2");
    wait_app_ready(&to).await;
    let jobs = get(&to, "/status", None).await.json()["jobs"].clone();
    assert_eq!(jobs[0]["state"], "rolled-back");

    // Download A and restore it from the file: it sticks.
    let file = e.root().join("a.tar.zst");
    let out = init.cli(&["snapshot", "download", &id_a, file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = init.cli(&["restore", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stderr(&out), init.log());
    assert!(stdout(&out).contains("succeeded"), "{}", stdout(&out));
    assert_eq!(std::fs::read_to_string(store.join("data")).unwrap(), "v1");
    wait_app_ready(&to).await;

    // status, ready, list, delete.
    let out = init.cli(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("READY")
            && table
                .lines()
                .any(|l| l.starts_with("app ") && l.contains("RUNNING")),
        "{table}"
    );
    let out = init.cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"][0]["name"], "app");
    assert!(v["services"][0]["pid"].as_u64().is_some());
    assert_eq!(init.cli(&["ready"]).status.code(), Some(0));
    let out = init.cli(&["snapshot", "list"]);
    assert!(
        stdout(&out).contains(&id_a) && stdout(&out).contains(&id_b),
        "{}",
        stdout(&out)
    );
    let out = init.cli(&["snapshot", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&id_a.as_str()) && ids.contains(&id_b.as_str()),
        "{list}"
    );
    assert!(
        list["snapshots"][0]["size"].is_u64(),
        "sizes are numbers: {list}"
    );
    let out = init.cli(&["snapshot", "delete", &id_a]);
    assert!(out.status.success());
    let out = init.cli(&["snapshot", "delete", &id_a]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no such snapshot"),
        "{}",
        stderr(&out)
    );

    // Over TCP with the token from the environment, and without it.
    let tcp_line = init.log();
    let port = tcp_line
        .lines()
        .find_map(|l| l.split("127.0.0.1:").nth(1))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        })
        .expect("TCP address in the log");
    let url = format!("http://127.0.0.1:{port}");
    let token_file = e.root().join("etc/cfy-init/token");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cfy-init"))
        .args([
            "--root",
            e.root().to_str().unwrap(),
            "--config",
            e.config_file.to_str().unwrap(),
            "status",
        ])
        .env("CFY_INIT_HOOKS_URL", &url)
        .env("CFY_INIT_HOOKS_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cfy-init"))
        .args([
            "--root",
            e.root().to_str().unwrap(),
            "--config",
            e.config_file.to_str().unwrap(),
            "status",
        ])
        .env("CFY_INIT_HOOKS_URL", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));

    // No init: `ready` says 1, `status` says why.
    drop(init);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cfy-init"))
        .args([
            "--root",
            e.root().to_str().unwrap(),
            "--config",
            e.config_file.to_str().unwrap(),
            "ready",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
