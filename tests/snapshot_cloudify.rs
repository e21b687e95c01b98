//! Cloudify-level snapshots against a faithful fake of the manager's REST endpoints
//! (`/api/v3.1/snapshots...`, `/executions/{id}`, basic auth + `Tenant`), with faults:
//! wrong credentials, a failing execution.

#[path = "common/hooks.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cfy_init::config::Secret;
use cfy_init::snapshot::cloudify::CloudifyClient;
use cfy_init::snapshot::CloudifyRest;
use serde_json::json;

#[derive(Default)]
struct Manager {
    snapshots: HashMap<String, Vec<u8>>,
    /// execution id -> (polls left before it ends, final status)
    executions: HashMap<String, (u32, &'static str)>,
    restored: Vec<String>,
    fail_next: bool,
}

type S = Arc<Mutex<Manager>>;

fn authorized(h: &HeaderMap) -> bool {
    // "admin:secret-pw" in base64.
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Basic YWRtaW46c2VjcmV0LXB3")
        && h.get("tenant").and_then(|v| v.to_str().ok()) == Some("default_tenant")
}

fn denied() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"message": "User unauthorized", "error_code": "unauthorized_error"})),
    )
        .into_response()
}

fn new_execution(m: &mut Manager) -> serde_json::Value {
    let id = format!("exec-{}", m.executions.len());
    let status = if std::mem::take(&mut m.fail_next) {
        "failed"
    } else {
        "terminated"
    };
    m.executions.insert(id.clone(), (2, status));
    json!({"id": id, "status": "pending", "workflow_id": "x"})
}

async fn create(State(s): State<S>, Path(id): Path<String>, h: HeaderMap) -> Response {
    if !authorized(&h) {
        return denied();
    }
    let mut m = s.lock().unwrap();
    m.snapshots
        .insert(id.clone(), format!("PK-fake-snapshot-{id}").into_bytes());
    Json(new_execution(&mut m)).into_response()
}

async fn execution(State(s): State<S>, Path(id): Path<String>, h: HeaderMap) -> Response {
    if !authorized(&h) {
        return denied();
    }
    let mut m = s.lock().unwrap();
    let Some(e) = m.executions.get_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "no such execution"})),
        )
            .into_response();
    };
    let status = if e.0 > 0 {
        e.0 -= 1;
        "started"
    } else {
        e.1
    };
    let error = if status == "failed" {
        "workflow failed: boom"
    } else {
        ""
    };
    Json(json!({"id": id, "status": status, "error": error})).into_response()
}

async fn download(State(s): State<S>, Path(id): Path<String>, h: HeaderMap) -> Response {
    if !authorized(&h) {
        return denied();
    }
    match s.lock().unwrap().snapshots.get(&id) {
        Some(b) => b.clone().into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "snapshot not found"})),
        )
            .into_response(),
    }
}

async fn upload(State(s): State<S>, Path(id): Path<String>, h: HeaderMap, body: Bytes) -> Response {
    if !authorized(&h) {
        return denied();
    }
    s.lock()
        .unwrap()
        .snapshots
        .insert(id.clone(), body.to_vec());
    Json(json!({"id": id, "status": "uploaded"})).into_response()
}

async fn restore(
    State(s): State<S>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&h) {
        return denied();
    }
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut m = s.lock().unwrap();
    if !m.snapshots.contains_key(&id) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "snapshot not found"})),
        )
            .into_response();
    }
    if req["force"] != true {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "manager is not empty; use force"})),
        )
            .into_response();
    }
    m.restored.push(id);
    Json(new_execution(&mut m)).into_response()
}

async fn fake() -> (String, S) {
    let state: S = Arc::default();
    let app = Router::new()
        .route("/api/v3.1/snapshots/:id", put(create))
        .route("/api/v3.1/snapshots/:id/archive", get(download).put(upload))
        .route("/api/v3.1/snapshots/:id/restore", post(restore))
        .route("/api/v3.1/executions/:id", get(execution))
        .with_state(state.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, state)
}

fn client(url: &str, password: &str) -> CloudifyClient {
    let cfg = CloudifyRest {
        url: url.to_string(),
        tenant: "default_tenant".into(),
        username: "admin".into(),
        password: Some(Secret::new(password)),
        password_file: None,
    };
    CloudifyClient::new(&cfg)
        .unwrap()
        .with_poll(Duration::from_millis(10))
}

#[tokio::test]
async fn create_download_upload_restore() {
    let (url, state) = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&url, "secret-pw");
    let file = c.create_and_download("snap1", dir.path()).await.unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"PK-fake-snapshot-snap1");
    assert_eq!(file.file_name().unwrap(), "cloudify-snap1.zip");

    std::fs::write(dir.path().join("other.zip"), b"uploaded-bytes").unwrap();
    c.upload_and_restore("snap2", &dir.path().join("other.zip"), true)
        .await
        .unwrap();
    let m = state.lock().unwrap();
    assert_eq!(m.snapshots["snap2"], b"uploaded-bytes");
    assert_eq!(m.restored, ["snap2"]);
}

#[tokio::test]
async fn faults_are_reported_without_secrets() {
    let (url, state) = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let e = client(&url, "wrong-pw")
        .create_and_download("s", dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("401") && e.contains("User unauthorized"), "{e}");
    assert!(!e.contains("wrong-pw"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing downloaded"
    );

    state.lock().unwrap().fail_next = true;
    let e = client(&url, "secret-pw")
        .create_and_download("s", dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("failed") && e.contains("boom"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    std::fs::write(dir.path().join("a.zip"), b"x").unwrap();
    let e = client(&url, "secret-pw")
        .upload_and_restore("s", &dir.path().join("a.zip"), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("use force"), "{e}");
    let e = client(&url, "secret-pw")
        .create_and_download("../x", dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad snapshot id"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_control_api() {
    let (url, state) = fake().await;
    let e = common::env(&format!(
        "cloudify:\n  url: {url}\n  username: admin\n  password: secret-pw"
    ));
    let running = cfy_init::hooks::start(
        e.ctx.clone(),
        Arc::new(cfy_init::hooks::NoServices),
        cfy_init::hooks::BootState::new(),
    )
    .await
    .unwrap();
    let to = common::To::Unix(running.socket.clone());
    tokio::spawn(running.wait());
    let json = [("content-type", "application/json")];
    let r = common::request(
        &to,
        axum::http::Method::POST,
        "/cloudify/snapshots",
        &json,
        axum::body::Body::from(r#"{"id":"nightly"}"#),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(e.archives().join("cloudify-nightly.zip").is_file());
    let r = common::request(
        &to,
        axum::http::Method::POST,
        "/cloudify/restore",
        &json,
        axum::body::Body::from(r#"{"id":"nightly","force":true}"#),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(state.lock().unwrap().restored, ["nightly"]);
    let r = common::request(
        &to,
        axum::http::Method::POST,
        "/cloudify/restore",
        &json,
        axum::body::Body::from(r#"{"id":"missing"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    state.lock().unwrap().fail_next = true;
    let r = common::request(
        &to,
        axum::http::Method::POST,
        "/cloudify/snapshots",
        &json,
        axum::body::Body::from(r#"{"id":"bad"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.json()["error"].as_str().unwrap().contains("boom"));
    // The job history shows both outcomes; the password never appears.
    let status = common::get(&to, "/status", None).await;
    assert!(!String::from_utf8_lossy(&status.body).contains("secret-pw"));
    let jobs = status.json()["jobs"].clone();
    assert_eq!(jobs[0]["state"], "failed");
}
