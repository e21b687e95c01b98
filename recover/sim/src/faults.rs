//! Fault injection for the simulator: per route (method + path substring) and per call count,
//! answer an error status (before or after doing the work), delay (a client timeout), or drop
//! the connection (before or after doing the work), or let a rival client's port update land
//! first (a race no real cloud produces on demand).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::Shared;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultKind {
    /// Answer `status` without doing anything.
    Status { status: u16 },
    /// Do the work, then answer `status` (the client cannot know it happened).
    StatusAfter { status: u16 },
    /// Wait this long, then do the work and answer normally.
    Delay { ms: u64 },
    /// Close the connection without an answer, without doing anything.
    Drop,
    /// Do the work, then close the connection without an answer.
    DropAfter,
    /// Answer `status` (429, 413, 503) with `Retry-After: retry_after_s`, doing nothing.
    Throttle { status: u16, retry_after_s: u64 },
    /// Another client's update of the same port lands just before this call: the port
    /// (`/ports/<id>` in the path) gets `description`, its revision bumped as Neutron does;
    /// then the call goes on as usual.
    RivalWrite { description: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRule {
    /// HTTP method to match (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// Substring of the path to match (`/servers`, `/os-volume_attachments`, ...).
    pub path: String,
    /// Matching calls to let through before the first fault.
    #[serde(default)]
    pub skip: u32,
    /// Matching calls to fault (then the rule is spent).
    #[serde(default = "one")]
    pub times: u32,
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Matching calls seen so far.
    #[serde(default)]
    pub seen: u32,
}

fn one() -> u32 {
    1
}

impl FaultRule {
    pub fn new(method: Option<&str>, path: &str, kind: FaultKind) -> FaultRule {
        FaultRule {
            method: method.map(str::to_owned),
            path: path.to_owned(),
            skip: 0,
            times: 1,
            kind,
            seen: 0,
        }
    }
    pub fn skip(mut self, n: u32) -> FaultRule {
        self.skip = n;
        self
    }
    pub fn times(mut self, n: u32) -> FaultRule {
        self.times = n;
        self
    }

    /// Count the call; true when this call is to fail.
    fn hit(&mut self, method: &str, path: &str) -> bool {
        let matches = self.method.as_deref().map(|m| m == method).unwrap_or(true)
            && path.contains(&self.path);
        if !matches {
            return false;
        }
        self.seen += 1;
        self.seen > self.skip && self.seen <= self.skip + self.times
    }
}

fn error_response(status: u16) -> Response {
    let code = axum::http::StatusCode::from_u16(status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({ "computeFault": {
        "code": status, "message": format!("injected fault: HTTP {status}") } });
    (code, axum::Json(body)).into_response()
}

/// A response whose body fails: the client sees the connection drop mid-answer.
fn dropped() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<bytes::Bytes, std::io::Error>(std::io::Error::other("injected connection drop"))
    });
    Response::new(Body::from_stream(stream))
}

/// A rival's update of the port a request names, applied before the request itself.
fn rival_write(shared: &Shared, path: &str, description: String) {
    let Some((_, id)) = path.split_once("/ports/") else {
        return;
    };
    if let Some(p) = shared.state.lock().unwrap().ports.get_mut(id) {
        p.description = description;
        p.revision += 2;
    }
}

/// The middleware: records every API request and applies the first matching fault.
pub async fn layer(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let fault = {
        let mut faults = shared.faults.lock().unwrap();
        faults
            .iter_mut()
            .find_map(|f| f.hit(&method, &path).then(|| f.kind.clone()))
    };
    if let Some(k) = &fault {
        tracing::info!(%method, %path, fault = ?k, "injecting fault");
    }
    let resp = match fault {
        None => next.run(req).await,
        Some(FaultKind::Status { status }) => error_response(status),
        Some(FaultKind::Throttle {
            status,
            retry_after_s,
        }) => {
            let mut r = error_response(status);
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_s),
            );
            r
        }
        Some(FaultKind::Drop) => dropped(),
        Some(FaultKind::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(req).await
        }
        Some(FaultKind::StatusAfter { status }) => {
            let _ = next.run(req).await;
            error_response(status)
        }
        Some(FaultKind::RivalWrite { description }) => {
            rival_write(&shared, &path, description);
            next.run(req).await
        }
        Some(FaultKind::DropAfter) => {
            let _ = next.run(req).await;
            dropped()
        }
    };
    shared.state.lock().unwrap().seen.push(super::state::Seen {
        method,
        path,
        status: resp.status().as_u16(),
    });
    resp
}
