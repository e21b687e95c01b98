//! The server's responses checked against docs/openapi/hooks.yaml: every response's status
//! must be documented for its path and method, and its JSON body must validate against the
//! documented schema. Exercised against `cfy-init run` with a real supervised service.

#[path = "common/hooks.rs"]
mod common;

use std::time::Duration;

use axum::body::Body;
use common::{env_with, request, wait_ready, Init, Resp};
use hyper::Method;
use serde_json::Value;

/// A small JSON-schema check for the subset the document uses: `$ref`, `type` (string or
/// list, with "null"), `enum`, `properties`, `required`, `additionalProperties: false`,
/// `items`. (`pattern` and `format` are not checked.) Written here because a full
/// validator crate would be a heavy dependency for one test.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r
            .trim_start_matches("#/")
            .split('/')
            .fold(doc, |node, key| &node[key]);
        assert!(!target.is_null(), "dangling $ref {r}");
        return validate(doc, target, v, at, errs);
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "string" => v.is_string(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => false,
        });
        if !ok {
            errs.push(format!("{at}: {v} is not of type {types:?}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errs.push(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let (Some(obj), Some(props)) = (
        v.as_object(),
        schema.get("properties").and_then(Value::as_object),
    ) {
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(req.as_str().unwrap()) {
                errs.push(format!("{at}: missing required {req}"));
            }
        }
        for (k, val) in obj {
            match props.get(k) {
                Some(s) => validate(doc, s, val, &format!("{at}.{k}"), errs),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errs.push(format!("{at}: undocumented property {k:?}"))
                }
                None => {}
            }
        }
    }
    if let (Some(arr), Some(items)) = (v.as_array(), schema.get("items")) {
        for (i, x) in arr.iter().enumerate() {
            validate(doc, items, x, &format!("{at}[{i}]"), errs);
        }
    }
}

/// The documented path template matching `path` (query stripped).
fn template<'a>(doc: &'a Value, path: &str) -> Option<&'a str> {
    let path = path.split('?').next().unwrap();
    let segs: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .find(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == segs.len()
                && ts
                    .iter()
                    .zip(&segs)
                    .all(|(a, b)| a.starts_with('{') || a == b)
        })
}

fn check(doc: &Value, method: &Method, path: &str, r: &Resp, errs: &mut Vec<String>) {
    let t = template(doc, path).unwrap_or_else(|| panic!("{path}: not in the document"));
    let op = &doc["paths"][t][method.as_str().to_lowercase()];
    assert!(!op.is_null(), "{method} {t}: not in the document");
    let status = r.status.as_u16().to_string();
    let mut resp = &op["responses"][&status];
    if resp.is_null() {
        errs.push(format!("{method} {path}: status {status} not documented"));
        return;
    }
    if let Some(rf) = resp.get("$ref").and_then(Value::as_str) {
        resp = rf
            .trim_start_matches("#/")
            .split('/')
            .fold(doc, |n, k| &n[k]);
    }
    let content = resp["content"].as_object().expect("content");
    let ct = r
        .headers
        .get("content-type")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("");
    let (media, spec) = content
        .iter()
        .find(|(m, _)| ct.starts_with(m.as_str()))
        .unwrap_or_else(|| panic!("{method} {path}: content type {ct:?} not documented"));
    if media == "application/json" {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        validate(
            doc,
            &spec["schema"],
            &body,
            &format!("{method} {path} {status}"),
            errs,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_match_the_openapi_document() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/openapi/hooks.yaml"
    ))
    .unwrap();
    let doc: Value = serde_norway::from_str(&text).unwrap();

    // The validator itself must catch drift.
    let mut e = Vec::new();
    let bad = serde_json::json!({"error": "x", "extra": 1});
    validate(
        &doc,
        &serde_json::json!({"$ref": "#/components/schemas/Error"}),
        &bad,
        "self",
        &mut e,
    );
    assert_eq!(e.len(), 1, "{e:?}");
    e.clear();
    validate(
        &doc,
        &serde_json::json!({"$ref": "#/components/schemas/Job"}),
        &serde_json::json!({"id": 1}),
        "self",
        &mut e,
    );
    assert!(e.len() > 5, "{e:?}");

    let env = env_with(
        "quiesce:\n  services: [app]\n  pre: [[touch, \"{store}/../pre\"]]\n  post: [[touch, \"{store}/../post\"]]",
        "supervise:\n  services:\n    - name: app\n      command: [sleep, \"1000\"]\n      startsecs: 0s\n",
    );
    std::fs::write(env.store().join("data"), "d").unwrap();
    let init = Init::start(&env);
    let to = init.to();
    wait_ready(&to, Duration::from_secs(30)).await;

    let mut errs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut call = async |m: Method, path: &str, headers: &[(&str, &str)], body: &str| {
        let r = request(&to, m.clone(), path, headers, Body::from(body.to_string())).await;
        check(&doc, &m, path, &r, &mut errs);
        seen.insert(format!(
            "{m} {} {}",
            template(&doc, path).unwrap(),
            r.status.as_u16()
        ));
        r
    };
    call(Method::GET, "/healthz", &[], "").await;
    call(Method::GET, "/readyz", &[], "").await;
    call(Method::GET, "/status", &[], "").await;
    call(Method::GET, "/metrics", &[], "").await;
    call(Method::POST, "/services/app/restart", &[], "").await;
    call(Method::POST, "/services/app/stop", &[], "").await;
    call(Method::POST, "/services/app/stop", &[], "").await; // 409 not running
    call(Method::POST, "/services/app/start", &[], "").await;
    call(Method::POST, "/services/nope/start", &[], "").await;
    call(Method::POST, "/services/app/jump", &[], "").await;
    let snap = call(Method::POST, "/snapshots?wait=true", &[], "")
        .await
        .json();
    let id = snap["id"].as_str().unwrap().to_string();
    // Quiesce commands ran under the PID-1 reaper.
    assert!(env.root().join("pre").exists() && env.root().join("post").exists());
    let job = call(Method::POST, "/snapshots", &[], "").await.json();
    let job_id = job["id"].as_str().unwrap().to_string();
    call(Method::POST, "/snapshots", &[], "").await; // 409 while the first one runs (or 202)
    call(Method::GET, &format!("/jobs/{job_id}"), &[], "").await;
    // Let the background job finish before the next calls.
    loop {
        let r = call(Method::GET, &format!("/jobs/{job_id}"), &[], "")
            .await
            .json();
        if r["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    call(Method::GET, "/status", &[], "").await;
    call(Method::GET, "/snapshots", &[], "").await;
    call(Method::GET, &format!("/snapshots/{id}"), &[], "").await;
    call(Method::GET, &format!("/snapshots/{id}/archive"), &[], "").await;
    call(Method::GET, "/snapshots/..bad", &[], "").await;
    call(Method::GET, "/snapshots/nothere", &[], "").await;
    let json = [("content-type", "application/json")];
    call(
        Method::POST,
        "/restore?wait=true",
        &json,
        &format!("{{\"id\":\"{id}\"}}"),
    )
    .await;
    call(Method::POST, "/restore", &json, "{oops").await;
    call(Method::POST, "/restore?wait=true", &[], "garbage").await;
    let r = call(
        Method::POST,
        "/restore",
        &json,
        &format!("{{\"id\":\"{id}\"}}"),
    )
    .await;
    let rid = r.json()["id"].as_str().unwrap().to_string();
    loop {
        let r = call(Method::GET, &format!("/jobs/{rid}"), &[], "")
            .await
            .json();
        if r["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    call(Method::DELETE, &format!("/snapshots/{id}"), &[], "").await;
    call(Method::DELETE, &format!("/snapshots/{id}"), &[], "").await;
    call(Method::GET, "/jobs/nope", &[], "").await;
    call(Method::POST, "/cloudify/snapshots", &json, "{\"id\":\"a\"}").await; // not configured
    assert!(
        errs.is_empty(),
        "responses not matching docs/openapi/hooks.yaml:\n{}",
        errs.join("\n")
    );
    // Breadth: each of these was actually exercised.
    for want in [
        "GET /status 200",
        "POST /services/{name}/{action} 200",
        "POST /services/{name}/{action} 404",
        "POST /services/{name}/{action} 409",
        "POST /services/{name}/{action} 400",
        "POST /snapshots 201",
        "POST /snapshots 202",
        "GET /snapshots/{id}/archive 200",
        "POST /restore 200",
        "POST /restore 202",
        "POST /restore 400",
        "POST /restore 422",
        "DELETE /snapshots/{id} 200",
        "DELETE /snapshots/{id} 404",
        "GET /jobs/{id} 200",
        "GET /snapshots/{id} 400",
    ] {
        assert!(seen.contains(want), "{want} not exercised: {seen:?}");
    }
}
