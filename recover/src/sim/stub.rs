//! A minimal stand-in for cfy-init's hooks API (health, readiness, tar snapshot and restore of
//! `ROOT/cfy-persist`), for running the simulator by hand when cfy-init is not built.
//! The end-to-end tests use the real cfy-init instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

struct Stub {
    root: PathBuf,
    token: Option<String>,
}

impl Stub {
    fn store(&self) -> PathBuf {
        self.root.join("cfy-persist")
    }
    fn authorized(&self, h: &HeaderMap) -> bool {
        match &self.token {
            None => true,
            Some(t) => h
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(|v| v == format!("Bearer {t}"))
                .unwrap_or(false),
        }
    }
}

/// Serve until killed.
pub async fn serve(
    root: PathBuf,
    listen: SocketAddr,
    token: Option<String>,
) -> std::io::Result<()> {
    let stub = Arc::new(Stub { root, token });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/snapshots", post(snapshot))
        .route("/snapshots/:id/archive", get(archive))
        .route("/restore", post(restore))
        .with_state(stub);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await
}

async fn readyz(State(s): State<Arc<Stub>>) -> Response {
    if s.store().is_dir() {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no store").into_response()
    }
}

async fn snapshot(State(s): State<Arc<Stub>>, h: HeaderMap) -> Response {
    if !s.authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let id = format!("snap-{}", rand::random::<u32>());
    let dir = s.root.join("snapshots");
    let result = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let f = std::fs::File::create(dir.join(format!("{id}.tar")))?;
        let mut b = tar::Builder::new(f);
        b.append_dir_all(".", s.store())?;
        b.into_inner()?.sync_all()
    })();
    match result {
        Ok(()) => Json(serde_json::json!({ "id": id, "state": "done" })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn archive(State(s): State<Arc<Stub>>, h: HeaderMap, Path(id): Path<String>) -> Response {
    if !s.authorized(&h) || id.contains('/') {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match std::fs::read(s.root.join("snapshots").join(format!("{id}.tar"))) {
        Ok(b) => b.into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn restore(State(s): State<Arc<Stub>>, h: HeaderMap, body: Bytes) -> Response {
    if !s.authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let store = s.store();
    let result = (|| -> std::io::Result<()> {
        for e in std::fs::read_dir(&store)? {
            let p = e?.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
        tar::Archive::new(&body[..]).unpack(&store)
    })();
    match result {
        Ok(()) => Json(serde_json::json!({ "state": "done" })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
