//! The simulator's HTTP routes: Keystone, Nova, Neutron, Cinder, with token checks,
//! microversion negotiation (honoured and echoed) and the fault layer in front.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::state::*;
use super::{Shared, APP_CRED_ID, APP_CRED_SECRET, PASSWORD, PROJECT, USERNAME};
use compute::*;
use network::*;
use volume::*;

mod compute;
mod network;
mod volume;

type S = State<Arc<Shared>>;
type Q = Query<HashMap<String, String>>;

pub fn router(shared: Arc<Shared>) -> Router {
    let compute = Router::new()
        .route("/servers", get(list_servers).post(create_server))
        .route("/servers/detail", get(list_servers))
        .route("/servers/:id", get(show_server).delete(delete_server))
        .route("/servers/:id/action", post(server_action))
        .route(
            "/servers/:id/os-volume_attachments",
            get(list_volume_attachments).post(attach_volume),
        )
        .route(
            "/servers/:id/os-volume_attachments/:vol",
            axum::routing::delete(detach_volume),
        )
        .route("/servers/:id/os-interface", get(list_interfaces))
        .route(
            "/servers/:id/os-interface/:port",
            axum::routing::delete(detach_interface),
        )
        .route("/flavors/detail", get(list_flavors))
        .route("/os-keypairs/:name", get(show_keypair))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            compute_version,
        ));
    let network = Router::new()
        .route("/v2.0/ports", get(list_ports).post(create_port))
        .route("/v2.0/ports/:id", get(show_port).put(update_port))
        .route("/v2.0/floatingips", get(list_fips))
        .route("/v2.0/floatingips/:id", get(show_fip).put(update_fip));
    let volume = Router::new()
        .route("/v3/:project/volumes/:id", get(show_volume))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            volume_version,
        ));
    let authed = Router::new()
        .nest("/compute/v2.1", compute)
        .nest("/network", network)
        .nest("/volume", volume)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ));
    Router::new()
        .route("/identity/v3/auth/tokens", post(issue_token))
        .merge(authed)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            super::faults::layer,
        ))
        .with_state(shared)
}

fn err(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        status,
        Json(json!({ kind: { "code": status.as_u16(), "message": message } })),
    )
        .into_response()
}

fn neutron_err(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "NeutronError": { "type": kind, "message": message.into(), "detail": "" } })),
    )
        .into_response()
}

fn not_found(what: &str) -> Response {
    err(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        format!("{what} could not be found."),
    )
}

fn conflict(message: impl Into<String>) -> Response {
    err(StatusCode::CONFLICT, "conflictingRequest", message)
}

// ---------- Keystone ----------

async fn issue_token(State(sh): S, Json(body): Json<Value>) -> Response {
    let identity = &body["auth"]["identity"];
    let methods = identity["methods"].as_array().cloned().unwrap_or_default();
    let ok = if methods.iter().any(|m| m == "password") {
        let u = &identity["password"]["user"];
        (u["name"] == USERNAME || u["id"] == USERNAME) && u["password"] == PASSWORD
    } else if methods.iter().any(|m| m == "application_credential") {
        let c = &identity["application_credential"];
        c["id"] == APP_CRED_ID && c["secret"] == APP_CRED_SECRET
    } else {
        false
    };
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": { "code": 401, "title": "Unauthorized",
                "message": "The request you have made requires authentication." } })),
        )
            .into_response();
    }
    let token = format!("gAAAA{:032x}", rand::random::<u128>());
    sh.state.lock().unwrap().tokens.push(token.clone());
    let base = &sh.base_url;
    let volume_type = sh.config.lock().unwrap().volume_service_type.clone();
    let ep = |url: String, id: &str| {
        json!([
            { "id": format!("{id}-pub"), "interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": url },
            { "id": format!("{id}-int"), "interface": "internal", "region": "RegionOne", "region_id": "RegionOne", "url": url },
        ])
    };
    let catalog = json!([
        { "id": "svc-identity", "type": "identity", "name": "keystone", "endpoints": ep(format!("{base}/identity"), "e1") },
        { "id": "svc-compute", "type": "compute", "name": "nova", "endpoints": ep(format!("{base}/compute/v2.1"), "e2") },
        { "id": "svc-network", "type": "network", "name": "neutron", "endpoints": ep(format!("{base}/network"), "e3") },
        { "id": "svc-volume", "type": volume_type, "name": "cinderv3", "endpoints": ep(format!("{base}/volume/v3/{PROJECT_ID}"), "e4") },
    ]);
    let body = json!({ "token": {
        "methods": methods,
        "expires_at": humantime::format_rfc3339_micros(std::time::SystemTime::now() + Duration::from_secs(3600)).to_string(),
        "issued_at": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        "audit_ids": ["3T2dc1CGQxyJsHdDu1xkcw"],
        "user": { "id": "9349aff8be7545ac9d2f1d00999a23cd", "name": USERNAME,
            "domain": { "id": "default", "name": "Default" }, "password_expires_at": "2030-01-01T00:00:00.000000" },
        "project": { "id": PROJECT_ID, "name": PROJECT, "domain": { "id": "default", "name": "Default" } },
        "roles": [{ "id": "r-member", "name": "member" }],
        "is_domain": false,
        "catalog": catalog,
    }});
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    resp.headers_mut().insert(
        "X-Subject-Token",
        HeaderValue::from_str(&token).expect("ascii"),
    );
    resp
}

async fn require_token(State(sh): S, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get("X-Auth-Token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let valid = sh.state.lock().unwrap().tokens.iter().any(|t| t == token);
    if !valid {
        return err(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "The request you have made requires authentication.",
        );
    }
    next.run(req).await
}

// ---------- microversions ----------

/// The requested microversion of `service` (`compute` / `volume`), default `min`.
fn requested(headers: &HeaderMap, service: &str, legacy: Option<&str>) -> Option<String> {
    let from_new = headers
        .get_all("OpenStack-API-Version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (svc, ver) = v.trim().split_once(' ')?;
            (svc.eq_ignore_ascii_case(service)).then(|| ver.trim().to_owned())
        });
    from_new.or_else(|| {
        legacy
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    })
}

async fn negotiate(
    mut req: Request,
    next: Next,
    service: &str,
    legacy: Option<&'static str>,
    min: Mv,
    max: Mv,
) -> Response {
    let mv = match requested(req.headers(), service, legacy).as_deref() {
        None => min,
        Some("latest") => max,
        Some(v) => match Mv::parse(v) {
            Some(mv) if mv >= min && mv <= max && mv.0 == min.0 => mv,
            _ => {
                return err(
                    StatusCode::NOT_ACCEPTABLE,
                    "computeFault",
                    format!("Version {v} is not supported by the API. Minimum is {min} and maximum is {max}."),
                )
            }
        },
    };
    req.extensions_mut().insert(mv);
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        "OpenStack-API-Version",
        HeaderValue::from_str(&format!("{service} {mv}")).expect("ascii"),
    );
    if let Some(l) = legacy {
        h.insert(l, HeaderValue::from_str(&mv.to_string()).expect("ascii"));
    }
    h.insert("Vary", HeaderValue::from_static("OpenStack-API-Version"));
    resp
}

async fn compute_version(State(sh): S, req: Request, next: Next) -> Response {
    let max = sh.config.lock().unwrap().max_compute;
    negotiate(
        req,
        next,
        "compute",
        Some("X-OpenStack-Nova-API-Version"),
        Mv(2, 1),
        max,
    )
    .await
}

async fn volume_version(State(sh): S, req: Request, next: Next) -> Response {
    let max = sh.config.lock().unwrap().max_volume;
    negotiate(req, next, "volume", None, Mv(3, 0), max).await
}

/// A list filter `?key=value`: absent matches everything.
fn query_matches(q: &HashMap<String, String>, key: &str, value: Option<&str>) -> bool {
    q.get(key)
        .map(|want| value == Some(want.as_str()))
        .unwrap_or(true)
}
