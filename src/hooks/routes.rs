//! The API's routes and handlers. Every error is JSON `{"error": "..."}` with a status code
//! that says what kind of problem it is (400 bad request, 404 unknown, 409 busy / wrong
//! state, 422 rejected archive, 503 shutting down).

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::BootState;
use crate::snapshot::control::ServiceControl;
use crate::snapshot::{Engine, RestoreSource, SnapshotError};
use crate::supervise::{ServiceInfo, SuperviseError};

#[derive(Clone)]
pub struct AppState {
    pub control: Arc<dyn ServiceControl>,
    pub engine: Arc<Engine>,
    pub boot: BootState,
    pub started: Instant,
    pub listeners: super::server::Listeners,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/services/:name/:action", post(service_action))
        .route("/snapshots", post(create_snapshot).get(list_snapshots))
        .route("/snapshots/:id", get(get_snapshot).delete(delete_snapshot))
        .route("/snapshots/:id/archive", get(download))
        .route("/restore", post(restore))
        .route("/jobs/:id", get(get_job))
        .route("/cloudify/snapshots", post(cloudify_snapshot))
        .route("/cloudify/restore", post(cloudify_restore))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

pub fn error_json(
    status: StatusCode,
    msg: impl Into<String>,
) -> (StatusCode, Json<serde_json::Value>) {
    (status, Json(json!({ "error": msg.into() })))
}

type ApiResult = Result<Response, (StatusCode, Json<serde_json::Value>)>;

fn snapshot_error(e: SnapshotError) -> (StatusCode, Json<serde_json::Value>) {
    let status = match &e {
        SnapshotError::Busy(_) => StatusCode::CONFLICT,
        SnapshotError::NotFound(_) => StatusCode::NOT_FOUND,
        SnapshotError::BadId(_) => StatusCode::BAD_REQUEST,
        SnapshotError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SnapshotError::NoCloudify => StatusCode::NOT_FOUND,
        SnapshotError::Remote(_) => StatusCode::BAD_GATEWAY,
        SnapshotError::NoSpace { .. } | SnapshotError::NoInodes { .. } => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_json(status, e.to_string())
}

fn supervise_error(e: SuperviseError) -> (StatusCode, Json<serde_json::Value>) {
    let status = match &e {
        SuperviseError::BadName(_) => StatusCode::NOT_FOUND,
        SuperviseError::AlreadyStarted(_) | SuperviseError::NotRunning(_) => StatusCode::CONFLICT,
        SuperviseError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        SuperviseError::BadSignal(_) | SuperviseError::BadArguments(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_json(status, e.to_string())
}

async fn not_found() -> impl IntoResponse {
    error_json(
        StatusCode::NOT_FOUND,
        "no such endpoint (see docs/openapi/hooks.yaml)",
    )
}

async fn method_not_allowed() -> impl IntoResponse {
    error_json(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    if s.control.is_shutting_down() {
        error_json(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else {
        Json(json!({ "status": "ok" })).into_response()
    }
}

/// The readiness verdict with what is still awaited and why.
#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub ready: bool,
    /// "boot", "shutting down", "no services defined", or service names.
    pub waiting: Vec<String>,
    /// Why each awaited service is not ready.
    pub reasons: std::collections::BTreeMap<String, String>,
}

/// Ready = boot complete, not shutting down, and every service that counts ready
/// ([`crate::supervise::counts_for_readiness`]); no services at all is not ready unless
/// `supervise.ready_without_services`. See docs/operations.md, "What ready means".
pub async fn verdict(s: &AppState) -> Verdict {
    let mut v = Verdict::default();
    if !s.boot.view().complete {
        v.waiting.push("boot".to_string());
        v.reasons
            .insert("boot".into(), "the boot steps are not finished".into());
    }
    if s.control.is_shutting_down() {
        v.waiting.push("shutting down".to_string());
    }
    let services = s.control.status().await;
    let mut counted = 0;
    for svc in crate::supervise::counts_for_readiness(&services) {
        counted += 1;
        if !svc.ready {
            v.waiting.push(svc.name.clone());
            let why = svc
                .reason
                .clone()
                .unwrap_or_else(|| svc.state.name().to_lowercase());
            v.reasons.insert(svc.name.clone(), why);
        }
    }
    if v.waiting.is_empty() && !s.control.all_ready().await {
        let what = if counted == 0 {
            "no services defined"
        } else {
            "services"
        };
        v.waiting.push(what.to_string());
        if counted == 0 {
            v.reasons.insert(
                what.into(),
                "no supervisord program and no native service (supervise.ready_without_services)"
                    .into(),
            );
        }
    }
    v.ready = v.waiting.is_empty();
    v
}

/// [`verdict`] as (ready, waiting).
pub async fn readiness(s: &AppState) -> (bool, Vec<String>) {
    let v = verdict(s).await;
    (v.ready, v.waiting)
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let v = verdict(&s).await;
    let code = if v.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(v))
}

#[derive(Serialize)]
struct ServiceView {
    #[serde(flatten)]
    info: ServiceInfo,
    /// Seconds since the current process started (running services only).
    uptime: Option<u64>,
    /// Processes of the service's tree now (escapees of `setsid` and double forks too).
    processes: usize,
}

#[derive(Serialize)]
struct StoreView {
    path: String,
    exists: bool,
    free_bytes: Option<u64>,
    total_bytes: Option<u64>,
    archive_dir: String,
}

fn store_view(engine: &Engine) -> StoreView {
    let path = engine.store();
    let fs = nix::sys::statvfs::statvfs(path).ok();
    StoreView {
        path: path.display().to_string(),
        exists: path.is_dir(),
        free_bytes: fs
            .as_ref()
            .map(|f| f.blocks_available() * f.fragment_size()),
        total_bytes: fs.as_ref().map(|f| f.blocks() * f.fragment_size()),
        archive_dir: engine.archive_dir().display().to_string(),
    }
}

async fn status(State(s): State<AppState>) -> impl IntoResponse {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let counts = s.control.process_counts();
    let services: Vec<ServiceView> = s
        .control
        .status()
        .await
        .into_iter()
        .map(|info| ServiceView {
            uptime: info.pid.map(|_| now.saturating_sub(info.start_time)),
            processes: counts.get(&info.name).copied().unwrap_or(0),
            info,
        })
        .collect();
    let v = verdict(&s).await;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": s.started.elapsed().as_secs(),
        "ready": v.ready,
        "waiting": v.waiting,
        "reasons": v.reasons,
        "shutting_down": s.control.is_shutting_down(),
        "boot": s.boot.view(),
        "services": services,
        "store": store_view(&s.engine),
        "jobs": s.engine.jobs.list(),
        "listeners": s.listeners.view(),
    }))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        super::metrics::render(&s).await,
    )
}

async fn service_action(
    State(s): State<AppState>,
    Path((name, action)): Path<(String, String)>,
) -> ApiResult {
    let result = match action.as_str() {
        "start" => s.control.start(&name, true).await,
        "stop" => s.control.stop(&name, true).await,
        "restart" => s.control.restart(&name).await,
        other => {
            return Err(error_json(
                StatusCode::BAD_REQUEST,
                format!("unknown action {other:?}: use start, stop or restart"),
            ))
        }
    };
    result.map_err(supervise_error)?;
    let info = s.control.info(&name).await.map_err(supervise_error)?;
    Ok(Json(info).into_response())
}

#[derive(Deserialize, Default)]
struct WaitQuery {
    #[serde(default)]
    wait: bool,
}

fn bad_query() -> (StatusCode, Json<serde_json::Value>) {
    error_json(
        StatusCode::BAD_REQUEST,
        "bad query: only ?wait=true|false is accepted",
    )
}

async fn create_snapshot(
    State(s): State<AppState>,
    q: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|_| bad_query())?;
    let job = s.engine.begin_snapshot().map_err(snapshot_error)?;
    let engine = s.engine.clone();
    let j = job.clone();
    let task = tokio::spawn(async move { engine.run_snapshot(j).await });
    if !q.wait {
        return Ok((StatusCode::ACCEPTED, Json(job.info())).into_response());
    }
    let meta = task
        .await
        .map_err(|e| error_json(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(snapshot_error)?;
    Ok((StatusCode::CREATED, Json(meta)).into_response())
}

async fn list_snapshots(State(s): State<AppState>) -> impl IntoResponse {
    Json(json!({ "snapshots": s.engine.list() }))
}

async fn get_snapshot(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(s.engine.get(&id).map_err(snapshot_error)?).into_response())
}

async fn delete_snapshot(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    s.engine.delete(&id).map_err(snapshot_error)?;
    Ok(Json(json!({ "deleted": id })).into_response())
}

async fn get_job(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match s.engine.jobs.get(&id) {
        Some(j) => Ok(Json(j).into_response()),
        None => Err(error_json(
            StatusCode::NOT_FOUND,
            format!("no such job: {id}"),
        )),
    }
}

async fn download(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let meta = s.engine.get(&id).map_err(snapshot_error)?;
    let path = s.engine.archive_path(&id).map_err(snapshot_error)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| snapshot_error(SnapshotError::io(&path, e)))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 16));
    Ok((
        [
            (header::CONTENT_TYPE, "application/zstd".to_string()),
            (header::CONTENT_LENGTH, meta.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.tar.zst\""),
            ),
            (
                header::HeaderName::from_static("x-archive-sha256"),
                meta.sha256,
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreById {
    id: String,
}

/// `POST /restore`: JSON `{"id": ...}` restores a stored snapshot; any other body is the
/// archive itself, streamed to a file in the archive directory first (optionally checked
/// against an `X-Archive-Sha256` header).
async fn restore(
    State(s): State<AppState>,
    q: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let Query(q) = q.map_err(|_| bad_query())?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // Claim the slot before reading a (possibly huge) body.
    let job = s.engine.begin_restore().map_err(snapshot_error)?;
    let source = if is_json {
        read_restore_id(body).await
    } else {
        let sha = headers
            .get("x-archive-sha256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        receive_upload(&s.engine, &job, body)
            .await
            .map(|path| RestoreSource::Upload { path, sha256: sha })
    };
    let source = match source {
        Ok(src) => src,
        Err(e) => {
            let err = SnapshotError::Other(e.1 .0["error"].as_str().unwrap_or("").to_string());
            job.finish(&Err(err));
            return Err(e);
        }
    };
    let engine = s.engine.clone();
    let j = job.clone();
    let task = tokio::spawn(async move { engine.run_restore(j, source).await });
    if !q.wait {
        return Ok((StatusCode::ACCEPTED, Json(job.info())).into_response());
    }
    task.await
        .map_err(|e| error_json(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(snapshot_error)?;
    Ok(Json(job.info()).into_response())
}

/// A small JSON request body (at most 64 KiB); a 400 error names the shape `expected`.
async fn json_body<T: serde::de::DeserializeOwned>(
    body: Body,
    expected: &str,
) -> Result<T, (StatusCode, Json<serde_json::Value>)> {
    let bytes: Bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|e| error_json(StatusCode::BAD_REQUEST, format!("cannot read body: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        error_json(
            StatusCode::BAD_REQUEST,
            format!("bad JSON body: {e}; expected {expected}"),
        )
    })
}

async fn read_restore_id(
    body: Body,
) -> Result<RestoreSource, (StatusCode, Json<serde_json::Value>)> {
    let r: RestoreById = json_body(body, r#"{"id": "<snapshot id>"}"#).await?;
    crate::snapshot::check_id(&r.id).map_err(snapshot_error)?;
    Ok(RestoreSource::Id(r.id))
}

async fn receive_upload(
    engine: &Engine,
    job: &crate::snapshot::jobs::Job,
    body: Body,
) -> Result<std::path::PathBuf, (StatusCode, Json<serde_json::Value>)> {
    let path = engine.upload_path(job).map_err(snapshot_error)?;
    let limit = engine.limits().max_upload_bytes;
    let result = async {
        // 0600: an archive holds the store's secrets.
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(|e| snapshot_error(SnapshotError::io(&path, e)))?;
        let mut stream = body.into_data_stream();
        let mut total: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                error_json(StatusCode::BAD_REQUEST, format!("upload interrupted: {e}"))
            })?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(error_json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("archive larger than snapshot.limits.max_upload_bytes ({limit})"),
                ));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| snapshot_error(SnapshotError::io(&path, e)))?;
        }
        if total == 0 {
            return Err(error_json(
                StatusCode::BAD_REQUEST,
                "empty body: send the archive, or JSON {\"id\": ...} with Content-Type: application/json",
            ));
        }
        file.sync_all()
            .await
            .map_err(|e| snapshot_error(SnapshotError::io(&path, e)))?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(e)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloudifyRequest {
    id: String,
    #[serde(default)]
    force: bool,
}

async fn cloudify_request(
    body: Body,
) -> Result<CloudifyRequest, (StatusCode, Json<serde_json::Value>)> {
    let r: CloudifyRequest = json_body(body, r#"{"id": "<name>", "force": false}"#).await?;
    crate::snapshot::check_id(&r.id).map_err(snapshot_error)?;
    Ok(r)
}

/// Run one Cloudify REST job in the shared job slot and wait for it.
async fn cloudify_job<F, T>(
    s: &AppState,
    kind: crate::snapshot::JobKind,
    id: &str,
    work: F,
) -> Result<T, (StatusCode, Json<serde_json::Value>)>
where
    F: std::future::Future<Output = Result<T, SnapshotError>>,
{
    let job = s.engine.begin_cloudify(kind, id).map_err(snapshot_error)?;
    job.phase("cloudify");
    let result = work.await;
    job.finish(
        &result
            .as_ref()
            .map(|_| ())
            .map_err(crate::snapshot::clone_err),
    );
    result.map_err(snapshot_error)
}

/// `POST /cloudify/snapshots {"id"}`: create a manager snapshot through Cloudify's REST API
/// and download it into the archive directory as `cloudify-<id>.zip`.
async fn cloudify_snapshot(State(s): State<AppState>, body: Body) -> ApiResult {
    let cfg = s
        .engine
        .cloudify()
        .cloned()
        .ok_or(SnapshotError::NoCloudify)
        .map_err(snapshot_error)?;
    let r = cloudify_request(body).await?;
    let client = crate::snapshot::cloudify::CloudifyClient::new(&cfg).map_err(snapshot_error)?;
    let dir = s.engine.archive_dir().to_path_buf();
    let file = cloudify_job(
        &s,
        crate::snapshot::JobKind::Snapshot,
        &r.id,
        client.create_and_download(&r.id, &dir),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": r.id, "file": file.display().to_string() })),
    )
        .into_response())
}

/// `POST /cloudify/restore {"id", "force"}`: upload `cloudify-<id>.zip` from the archive
/// directory to the manager and restore it there.
async fn cloudify_restore(State(s): State<AppState>, body: Body) -> ApiResult {
    let cfg = s
        .engine
        .cloudify()
        .cloned()
        .ok_or(SnapshotError::NoCloudify)
        .map_err(snapshot_error)?;
    let r = cloudify_request(body).await?;
    let file = s
        .engine
        .archive_dir()
        .join(format!("cloudify-{}.zip", r.id));
    if !file.is_file() {
        return Err(snapshot_error(SnapshotError::NotFound(format!(
            "cloudify-{}.zip",
            r.id
        ))));
    }
    let client = crate::snapshot::cloudify::CloudifyClient::new(&cfg).map_err(snapshot_error)?;
    cloudify_job(
        &s,
        crate::snapshot::JobKind::Restore,
        &r.id,
        client.upload_and_restore(&r.id, &file, r.force),
    )
    .await?;
    Ok(Json(json!({ "id": r.id, "restored": true })).into_response())
}
