//! The control API over its unix socket and TCP: health, readiness, status, auth, snapshot
//! and restore round trips, error statuses, and concurrency.

#[path = "common/hooks.rs"]
mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use axum::body::Body;
use cfy_init::hooks::{self, BootState, NoServices};
use common::{env, fingerprint, get, populate, request, To};
use hyper::{Method, StatusCode};

async fn start(e: &common::Env, boot: BootState) -> (To, To) {
    let running = hooks::start(e.ctx.clone(), Arc::new(NoServices), boot)
        .await
        .unwrap();
    let unix = To::Unix(running.socket.clone());
    let tcp = To::Tcp(running.tcp.unwrap());
    tokio::spawn(running.wait());
    (unix, tcp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_status_over_both_listeners() {
    let e = env("");
    let boot = BootState::new();
    boot.step_done("persist", Some("adopted".into()));
    boot.step_running("patch");
    let (unix, tcp) = start(&e, boot.clone()).await;

    for to in [&unix, &tcp] {
        let r = get(to, "/healthz", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["status"], "ok");
        let r = get(to, "/readyz", None).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "boot not complete yet"
        );
        assert_eq!(r.json()["waiting"][0], "boot");
    }
    boot.step_done("patch", None);
    boot.set_complete();
    for to in [&unix, &tcp] {
        assert_eq!(get(to, "/readyz", None).await.status, StatusCode::OK);
    }
    let r = get(&unix, "/status", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["boot"]["steps"][0]["name"], "persist");
    assert_eq!(v["boot"]["steps"][1]["state"], "done");
    assert_eq!(v["store"]["path"], e.store().display().to_string());
    assert_eq!(v["store"]["exists"], true);
    assert!(v["store"]["free_bytes"].as_u64().unwrap() > 0);
    assert_eq!(v["ready"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_needs_the_token_and_the_socket_is_private() {
    let e = env("");
    let (unix, tcp) = start(&e, BootState::new()).await;
    let sock = e.root().join("run/cfy-init/control.sock");
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "socket mode");
    assert_eq!(meta.uid(), 0);

    let r = get(&tcp, "/status", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("missing bearer token"));
    let r = get(&tcp, "/status", Some("wrong-token")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        !String::from_utf8_lossy(&r.body).contains(&e.token),
        "token never echoed"
    );
    let r = get(&tcp, "/status", Some(&format!("{}x", e.token))).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a longer token is wrong too"
    );
    let r = request(&tcp, Method::POST, "/snapshots", &[], Body::empty()).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "no snapshot without the token"
    );
    assert!(
        std::fs::read_dir(e.archives()).is_err(),
        "and nothing was started"
    );
    assert_eq!(
        get(&tcp, "/status", Some(&e.token)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&tcp, "/metrics", Some(&e.token)).await.status,
        StatusCode::OK
    );
    // The unix socket is guarded by its file mode; a token there is simply not needed.
    assert_eq!(
        get(&unix, "/status", Some("whatever")).await.status,
        StatusCode::OK
    );
    assert_eq!(get(&unix, "/status", None).await.status, StatusCode::OK);
    // A non-root user cannot connect at all.
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "socat", "-u", "OPEN:/dev/null"])
        .arg(format!("UNIX-CONNECT:{}", sock.display()))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "nobody connected to a 0600 root socket"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_download_restore_round_trip() {
    let e = env("keep: 2");
    populate(&e.store());
    let before = fingerprint(&e.store());
    let (unix, tcp) = start(&e, BootState::new()).await;
    let auth = format!("Bearer {}", e.token);
    let h = [("authorization", auth.as_str())];

    // Create over TCP and wait.
    let r = request(
        &tcp,
        Method::POST,
        "/snapshots?wait=true",
        &h,
        Body::empty(),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let meta = r.json();
    let id = meta["id"].as_str().unwrap().to_string();
    assert_eq!(meta["entries"], before.len());

    let r = get(&unix, "/snapshots", None).await;
    assert_eq!(r.json()["snapshots"][0]["id"], id);
    let r = get(&unix, &format!("/snapshots/{id}"), None).await;
    assert_eq!(r.json()["sha256"], meta["sha256"]);
    let archive = get(&unix, &format!("/snapshots/{id}/archive"), None).await;
    assert_eq!(archive.status, StatusCode::OK);
    assert_eq!(archive.body.len() as u64, meta["size"].as_u64().unwrap());

    // Change the store, then restore by upload over the socket: back to the snapshot.
    std::fs::write(e.store().join("var/lib/data/a.txt"), "changed").unwrap();
    std::fs::write(e.store().join("new-file"), "new").unwrap();
    std::fs::remove_file(e.store().join("var/lib/link")).unwrap();
    assert_ne!(fingerprint(&e.store()), before);
    let r = request(
        &unix,
        Method::POST,
        "/restore?wait=true",
        &[],
        Body::from(archive.body.clone()),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["state"], "succeeded");
    assert_eq!(fingerprint(&e.store()), before);
    // The rollback copy holds the changed store until the next good snapshot.
    assert!(e.store().join(".cfy-snapshot-rollback/new-file").exists());

    // Restore by id over TCP.
    std::fs::write(e.store().join("var/lib/data/a.txt"), "changed again").unwrap();
    let r = request(
        &tcp,
        Method::POST,
        "/restore?wait=true",
        &[h[0], ("content-type", "application/json")],
        Body::from(format!("{{\"id\":\"{id}\"}}")),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(fingerprint(&e.store()), before);

    // Retention keeps 2; the next snapshot drops the rollback copy.
    for _ in 0..2 {
        let r = request(
            &unix,
            Method::POST,
            "/snapshots?wait=true",
            &[],
            Body::empty(),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let list = get(&unix, "/snapshots", None).await.json();
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 2);
    assert!(!list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == id));
    assert!(!e.store().join(".cfy-snapshot-rollback").exists());
    let files: Vec<_> = std::fs::read_dir(e.archives())
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .collect();
    assert_eq!(
        files.len(),
        4,
        "two archives + two metadata files, no leftovers: {files:?}"
    );

    // Delete.
    let newest = list["snapshots"][0]["id"].as_str().unwrap().to_string();
    let r = request(
        &unix,
        Method::DELETE,
        &format!("/snapshots/{newest}"),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        get(&unix, &format!("/snapshots/{newest}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let e = env("");
    populate(&e.store());
    let (unix, _) = start(&e, BootState::new()).await;
    type Case<'a> = (
        Method,
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a str,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            Method::GET,
            "/nope",
            vec![],
            "",
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
        (
            Method::DELETE,
            "/status",
            vec![],
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "not allowed",
        ),
        (
            Method::POST,
            "/services/ghost/start",
            vec![],
            "",
            StatusCode::NOT_FOUND,
            "no such service: ghost",
        ),
        (
            Method::POST,
            "/services/ghost/jump",
            vec![],
            "",
            StatusCode::BAD_REQUEST,
            "unknown action",
        ),
        (
            Method::GET,
            "/snapshots/..%2Fetc",
            vec![],
            "",
            StatusCode::BAD_REQUEST,
            "bad snapshot id",
        ),
        (
            Method::GET,
            "/snapshots/nothere",
            vec![],
            "",
            StatusCode::NOT_FOUND,
            "no such snapshot",
        ),
        (
            Method::GET,
            "/snapshots/nothere/archive",
            vec![],
            "",
            StatusCode::NOT_FOUND,
            "no such snapshot",
        ),
        (
            Method::DELETE,
            "/snapshots/nothere",
            vec![],
            "",
            StatusCode::NOT_FOUND,
            "no such snapshot",
        ),
        (
            Method::POST,
            "/snapshots?wait=maybe",
            vec![],
            "",
            StatusCode::BAD_REQUEST,
            "bad query",
        ),
        (
            Method::POST,
            "/restore",
            vec![("content-type", "application/json")],
            "{\"id\":",
            StatusCode::BAD_REQUEST,
            "bad JSON body",
        ),
        (
            Method::POST,
            "/restore",
            vec![("content-type", "application/json")],
            "{\"id\":\"x\",\"y\":1}",
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            Method::POST,
            "/restore?wait=true",
            vec![("content-type", "application/json")],
            "{\"id\":\"nothere\"}",
            StatusCode::NOT_FOUND,
            "no such snapshot",
        ),
        (
            Method::POST,
            "/restore",
            vec![],
            "",
            StatusCode::BAD_REQUEST,
            "empty body",
        ),
        (
            Method::POST,
            "/restore?wait=true",
            vec![],
            "not an archive",
            StatusCode::UNPROCESSABLE_ENTITY,
            "archive rejected",
        ),
        (
            Method::GET,
            "/jobs/nope",
            vec![],
            "",
            StatusCode::NOT_FOUND,
            "no such job",
        ),
    ];
    for (m, path, headers, body, want, msg) in cases {
        let r = request(
            &unix,
            m.clone(),
            path,
            &headers,
            Body::from(body.to_string()),
        )
        .await;
        assert_eq!(
            r.status,
            want,
            "{m} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let err = r.json()["error"].as_str().unwrap().to_string();
        assert!(err.contains(msg), "{m} {path}: {err:?} lacks {msg:?}");
    }
    // Nothing was left behind by the failed uploads.
    let left: Vec<_> = std::fs::read_dir(e.archives())
        .into_iter()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_group_and_mode_are_applied() {
    let mut e = env("");
    e.ctx.config.hooks.socket_mode = "0660".into();
    e.ctx.config.hooks.socket_group = Some("postgres".into());
    let (unix, _) = start(&e, BootState::new()).await;
    let sock = e.root().join("run/cfy-init/control.sock");
    let meta = std::fs::metadata(&sock).unwrap();
    let pg = nix::unistd::Group::from_name("postgres").unwrap().unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), pg.gid.as_raw());
    // The directories above must be traversable for the group member to reach it.
    for d in [
        e.root(),
        &e.root().join("run"),
        &e.root().join("run/cfy-init"),
    ] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let connect = |user: &str| {
        std::process::Command::new("runuser")
            .args(["-u", user, "--", "socat", "-u", "OPEN:/dev/null"])
            .arg(format!("UNIX-CONNECT:{}", sock.display()))
            .output()
            .unwrap()
    };
    assert!(
        connect("postgres").status.success(),
        "group member connects"
    );
    assert!(!connect("nobody").status.success(), "others do not");
    assert_eq!(get(&unix, "/healthz", None).await.status, StatusCode::OK);
}

/// Each listener fails alone: a missing token file or a taken TCP port disables only the
/// TCP listener (shown in `/status`), a bad socket group only the unix socket; only when
/// nothing can listen does start fail, with the first error.
#[tokio::test]
async fn listeners_fail_alone() {
    let mut e = env("");
    let listener_of = |r: &common::Resp, kind: &str| {
        r.json()["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} listener in {}", r.json()))
    };

    // No token file: TCP fails, the control socket answers.
    std::fs::remove_file(e.root().join("etc/cfy-init/token")).unwrap();
    let running = hooks::start(e.ctx.clone(), Arc::new(NoServices), BootState::new())
        .await
        .unwrap();
    assert!(running.tcp.is_none());
    let unix = To::Unix(running.socket.clone());
    tokio::spawn(running.wait());
    let r = get(&unix, "/status", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let tcp = listener_of(&r, "tcp");
    assert_eq!(tcp["listening"], false);
    let err = tcp["error"].as_str().unwrap();
    assert!(
        err.contains("etc/cfy-init/token") && err.contains("hooks.token_file"),
        "{err}"
    );
    assert_eq!(listener_of(&r, "unix")["listening"], true);

    // A taken TCP port: the control socket still answers, the port's error is in /status.
    std::fs::write(e.root().join("etc/cfy-init/token"), "t").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    e.ctx.config.hooks.listen = Some(addr.clone());
    let running = hooks::start(e.ctx.clone(), Arc::new(NoServices), BootState::new())
        .await
        .unwrap();
    assert!(running.tcp.is_none());
    let unix = To::Unix(running.socket.clone());
    tokio::spawn(running.wait());
    for path in ["/healthz", "/readyz", "/status"] {
        let r = get(&unix, path, None).await;
        assert!(
            r.status == StatusCode::OK || path == "/readyz",
            "{path}: {}",
            r.status
        );
    }
    let r = get(&unix, "/status", None).await;
    let tcp = listener_of(&r, "tcp");
    assert_eq!(tcp["address"], addr.as_str());
    assert!(
        tcp["error"].as_str().unwrap().contains("cannot listen"),
        "{tcp}"
    );
    drop(taken);

    // A bad socket group: the unix socket fails, TCP serves.
    e.ctx.config.hooks.listen = Some("127.0.0.1:0".into());
    e.ctx.config.hooks.socket = e.root().join("run/other/control.sock");
    e.ctx.config.hooks.socket_group = Some("no-such-group-xyz".into());
    let running = hooks::start(e.ctx.clone(), Arc::new(NoServices), BootState::new())
        .await
        .unwrap();
    let tcp = To::Tcp(running.tcp.expect("TCP listens"));
    assert!(!e.root().join("run/other/control.sock").exists());
    tokio::spawn(running.wait());
    let r = get(&tcp, "/status", Some("t")).await;
    assert_eq!(r.status, StatusCode::OK);
    let unix = listener_of(&r, "unix");
    assert_eq!(unix["listening"], false);
    assert!(unix["error"]
        .as_str()
        .unwrap()
        .contains("no-such-group-xyz"));

    // Nothing can listen: an error, no half-started API.
    e.ctx.config.hooks.listen = None;
    let err = match hooks::start(e.ctx.clone(), Arc::new(NoServices), BootState::new()).await {
        Err(err) => err.to_string(),
        Ok(_) => panic!("started with a bad group and no TCP"),
    };
    assert!(err.contains("no-such-group-xyz"), "{err}");
}
