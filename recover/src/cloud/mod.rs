//! The OpenStack client: Keystone v3 auth, endpoints from the catalog, microversion-pinned
//! requests to Nova / Neutron / Cinder with retries of 5xx, timeouts and dropped connections.
//!
//! Written on plain reqwest with typed models ([`models`]) rather than an SDK crate: we need
//! ~15 calls, explicit microversions and full control over which calls may be retried.

pub mod api;
pub mod models;

use std::sync::Mutex;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use cfy_openstack::error_message;
use cfy_openstack::session::catalog_url;

use crate::creds::Credentials;

/// Nova microversion we speak: tags in create (2.52), embedded flavor (2.47), host_status
/// (2.16), user_data in show (2.3). 2.79 is available since Train (2019).
pub const COMPUTE_MICROVERSION: &str = "2.79";
/// Cinder microversion we speak (volume attachments API, available since Pike).
pub const VOLUME_MICROVERSION: &str = "3.50";

/// Catalog service types that may carry block storage, most preferred first.
pub const VOLUME_SERVICE_TYPES: &[&str] = &["block-storage", "volumev3", "volume", "volumev2"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Compute,
    Network,
    Volume,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Compute => "compute",
            Service::Network => "network",
            Service::Volume => "block-storage",
        }
    }
}

/// When to retry a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads, DELETE, PUT: retried on 5xx, timeouts and dropped connections.
    Idempotent,
    /// A POST that creates something: never retried here; the caller looks for the result
    /// before trying again.
    Once,
}

/// Back-off and timeouts.
#[derive(Debug, Clone)]
pub struct Policy {
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            attempts: 6,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            timeout: Duration::from_secs(30),
        }
    }
}

impl Policy {
    /// Exponential back-off for attempt `n` (0-based), with up to 25 % jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let base = self
            .backoff
            .saturating_mul(1 << n.min(10))
            .min(self.max_backoff);
        let jitter = rand::random::<f64>() * 0.25;
        base.mul_f64(1.0 + jitter)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("{service} {method} {path}: HTTP {status}: {message}")]
    Http {
        service: &'static str,
        method: Method,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{service} {method} {path}: {reason}")]
    Transport {
        service: &'static str,
        method: Method,
        path: String,
        reason: String,
    },
    #[error("Keystone authentication at {url} failed: {reason}")]
    Auth { url: String, reason: String },
    #[error("the service catalog has no {what} endpoint (interface {interface}{region}); check --os-interface / region_name")]
    Catalog {
        what: String,
        interface: String,
        region: String,
    },
    #[error("{service}: the endpoint answered with microversion `{got}` instead of `{want}`: this cloud is too old for cfy-recover")]
    Microversion {
        service: &'static str,
        want: String,
        got: String,
    },
    #[error("{what}: cannot decode the response: {reason}")]
    Decode { what: String, reason: String },
}

impl CloudError {
    pub fn status(&self) -> Option<u16> {
        match self {
            CloudError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }
    /// Worth another try: 5xx (but 501), transport failures.
    pub fn is_transient(&self) -> bool {
        match self {
            CloudError::Http { status, .. } => *status >= 500 && *status != 501,
            CloudError::Transport { .. } => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Endpoints {
    compute: String,
    network: String,
    volume: String,
}

#[derive(Debug, Clone)]
struct Session {
    token: String,
    endpoints: Endpoints,
}

/// An authenticated connection to one cloud.
pub struct Cloud {
    http: reqwest::Client,
    creds: Credentials,
    pub policy: Policy,
    session: Mutex<Option<Session>>,
}

impl Cloud {
    pub fn new(creds: Credentials, policy: Policy) -> Result<Cloud, CloudError> {
        let http = reqwest::Client::builder()
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| CloudError::Auth {
                url: creds.auth_url.clone(),
                reason: e.to_string(),
            })?;
        Ok(Cloud {
            http,
            creds,
            policy,
            session: Mutex::new(None),
        })
    }

    pub fn credentials_source(&self) -> &str {
        &self.creds.source
    }

    /// Authenticate (again) and read the endpoints from the catalog.
    pub async fn authenticate(&self) -> Result<(), CloudError> {
        let url = format!("{}/auth/tokens", self.creds.auth_url);
        let body = cfy_openstack::session::auth_body(&self.creds.method);
        let auth_err = |reason: String| CloudError::Auth {
            url: self.creds.auth_url.clone(),
            reason,
        };
        let mut attempt = 0;
        let resp = loop {
            match self.http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_server_error() && attempt + 1 < self.policy.attempts => {}
                Ok(r) => break r,
                Err(e) if attempt + 1 >= self.policy.attempts => {
                    return Err(auth_err(e.to_string()))
                }
                Err(_) => {}
            }
            tokio::time::sleep(self.policy.delay(attempt)).await;
            attempt += 1;
        };
        let status = resp.status();
        let token = resp
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.map_err(|e| auth_err(e.to_string()))?;
        if !status.is_success() {
            return Err(auth_err(format!(
                "HTTP {}: {} (check the credentials from {})",
                status.as_u16(),
                error_message(&text),
                self.creds.source
            )));
        }
        let token = token.ok_or_else(|| auth_err("no X-Subject-Token header".into()))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| auth_err(e.to_string()))?;
        let endpoints = self.endpoints_from(&doc["token"]["catalog"])?;
        *self.session.lock().unwrap() = Some(Session { token, endpoints });
        Ok(())
    }

    fn endpoints_from(&self, catalog: &Value) -> Result<Endpoints, CloudError> {
        let find = |types: &[&str], what: &str| -> Result<String, CloudError> {
            for t in types {
                if let Some(url) = catalog_url(catalog, t, &self.creds) {
                    return Ok(url.trim_end_matches('/').to_owned());
                }
            }
            Err(CloudError::Catalog {
                what: what.to_owned(),
                interface: self.creds.interface.clone(),
                region: self
                    .creds
                    .region
                    .as_ref()
                    .map(|r| format!(", region {r}"))
                    .unwrap_or_default(),
            })
        };
        let network = find(&["network"], "network")?;
        // Neutron's catalog URL usually lacks the version; its paths all start with /v2.0.
        let network = if network.ends_with("/v2.0") {
            network
        } else {
            format!("{network}/v2.0")
        };
        Ok(Endpoints {
            compute: find(&["compute"], "compute")?,
            network,
            volume: find(VOLUME_SERVICE_TYPES, "block-storage (volumev3)")?,
        })
    }

    fn session(&self) -> Option<Session> {
        self.session.lock().unwrap().clone()
    }

    /// One call with JSON in and out, retried per `retry`; re-authenticates once on 401.
    pub async fn call(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Value, CloudError> {
        let mut attempt = 0;
        let mut reauthed = false;
        loop {
            if self.session().is_none() {
                self.authenticate().await?;
            }
            let result = self.send_once(service, &method, path, body).await;
            match result {
                Err(CloudError::Http { status: 401, .. }) if !reauthed => {
                    reauthed = true;
                    *self.session.lock().unwrap() = None;
                    continue;
                }
                Err(e)
                    if e.is_transient()
                        && retry == Retry::Idempotent
                        && attempt + 1 < self.policy.attempts =>
                {
                    let delay = self.policy.delay(attempt);
                    tracing::warn!(error = %e, retry_in = ?delay, "transient error, retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn send_once(
        &self,
        service: Service,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CloudError> {
        let session = self.session().expect("authenticated above");
        let base = match service {
            Service::Compute => &session.endpoints.compute,
            Service::Network => &session.endpoints.network,
            Service::Volume => &session.endpoints.volume,
        };
        let mut req = self
            .http
            .request(method.clone(), format!("{base}{path}"))
            .header("X-Auth-Token", &session.token)
            .header("Accept", "application/json");
        match service {
            Service::Compute => {
                req = req
                    .header(
                        "OpenStack-API-Version",
                        format!("compute {COMPUTE_MICROVERSION}"),
                    )
                    .header("X-OpenStack-Nova-API-Version", COMPUTE_MICROVERSION);
            }
            Service::Volume => {
                req = req.header(
                    "OpenStack-API-Version",
                    format!("volume {VOLUME_MICROVERSION}"),
                );
            }
            Service::Network => {}
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let transport = |e: reqwest::Error| CloudError::Transport {
            service: service.name(),
            method: method.clone(),
            path: path.to_owned(),
            reason: describe(&e),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let echoed = resp
            .headers()
            .get("OpenStack-API-Version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(CloudError::Http {
                service: service.name(),
                method: method.clone(),
                path: path.to_owned(),
                status: status.as_u16(),
                message: error_message(&text),
            });
        }
        check_microversion(service, echoed.as_deref())?;
        if text.trim().is_empty() || status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| CloudError::Decode {
            what: format!("{} {method} {path}", service.name()),
            reason: e.to_string(),
        })
    }

    /// GET `path` and decode the member `key` of the answer.
    pub async fn get<T: DeserializeOwned>(
        &self,
        service: Service,
        path: &str,
        key: &str,
    ) -> Result<T, CloudError> {
        let v = self
            .call(service, Method::GET, path, None, Retry::Idempotent)
            .await?;
        decode(&v, key, path)
    }
}

/// Decode member `key` of `v` into `T`.
pub fn decode<T: DeserializeOwned>(v: &Value, key: &str, what: &str) -> Result<T, CloudError> {
    serde_json::from_value(v.get(key).cloned().unwrap_or(Value::Null)).map_err(|e| {
        CloudError::Decode {
            what: format!("{what} ({key})"),
            reason: e.to_string(),
        }
    })
}

fn check_microversion(service: Service, echoed: Option<&str>) -> Result<(), CloudError> {
    let (kind, want) = match service {
        Service::Compute => ("compute", COMPUTE_MICROVERSION),
        Service::Volume => ("volume", VOLUME_MICROVERSION),
        Service::Network => return Ok(()),
    };
    let got = echoed.unwrap_or("(none)");
    let ok = echoed
        .map(|v| v.split_whitespace().collect::<Vec<_>>() == [kind, want])
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(CloudError::Microversion {
            service: service.name(),
            want: format!("{kind} {want}"),
            got: got.to_owned(),
        })
    }
}

/// A transport error in one line, naming timeouts and dropped connections as such.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::creds::{AuthMethod, Domain, Secret};
    use cfy_openstack::session::auth_body;
    use serde_json::json;

    fn creds(interface: &str, region: Option<&str>) -> Credentials {
        Credentials {
            auth_url: "http://k/v3".into(),
            method: AuthMethod::Password {
                username: Some("u".into()),
                user_id: None,
                user_domain: Domain::default(),
                password: Secret::new("hunter2"),
                project_name: Some("p".into()),
                project_id: None,
                project_domain: Domain::default(),
            },
            region: region.map(str::to_owned),
            interface: interface.into(),
            source: "test".into(),
        }
    }

    #[test]
    fn catalog_picks_interface_region_and_any_block_storage_name() {
        let catalog = json!([
            { "type": "compute", "endpoints": [
                { "interface": "public", "region_id": "R1", "url": "http://pub-r1/compute" },
                { "interface": "internal", "region_id": "R1", "url": "http://int-r1/compute" },
                { "interface": "public", "region_id": "R2", "url": "http://pub-r2/compute" } ] },
            { "type": "network", "endpoints": [
                { "interface": "public", "region_id": "R1", "url": "http://n/" } ] },
            { "type": "block-storage", "endpoints": [
                { "interface": "public", "region_id": "R1", "url": "http://bs/v3/p" } ] },
        ]);
        let c = creds("internal", Some("R1"));
        assert_eq!(
            catalog_url(&catalog, "compute", &c).as_deref(),
            Some("http://int-r1/compute")
        );
        let c = creds("public", Some("R2"));
        assert_eq!(
            catalog_url(&catalog, "compute", &c).as_deref(),
            Some("http://pub-r2/compute")
        );
        let cloud = Cloud::new(creds("public", Some("R1")), Policy::default()).unwrap();
        let e = cloud.endpoints_from(&catalog).unwrap();
        assert_eq!(e.volume, "http://bs/v3/p");
        assert_eq!(e.network, "http://n/v2.0");
        let cloud = Cloud::new(creds("admin", None), Policy::default()).unwrap();
        let err = cloud.endpoints_from(&catalog).unwrap_err().to_string();
        assert!(err.contains("interface admin"), "{err}");
    }

    #[test]
    fn error_messages_are_extracted_from_each_service_shape() {
        assert_eq!(
            error_message(r#"{"itemNotFound": {"code": 404, "message": "nope"}}"#),
            "nope"
        );
        assert_eq!(
            error_message(
                r#"{"NeutronError": {"type": "X", "message": "bad port", "detail": ""}}"#
            ),
            "bad port"
        );
        assert_eq!(
            error_message(r#"{"error": {"code": 401, "message": "auth"}}"#),
            "auth"
        );
        assert_eq!(error_message(""), "(empty body)");
        assert_eq!(error_message("<html>502</html>"), "<html>502</html>");
    }

    #[test]
    fn microversion_echo_must_match() {
        assert!(check_microversion(Service::Compute, Some("compute 2.79")).is_ok());
        assert!(check_microversion(Service::Compute, Some("compute 2.1")).is_err());
        assert!(check_microversion(Service::Compute, None).is_err());
        assert!(check_microversion(Service::Volume, Some("volume 3.50")).is_ok());
        assert!(check_microversion(Service::Network, None).is_ok());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = Policy {
            attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        assert!(
            p.delay(0) >= Duration::from_millis(100) && p.delay(0) <= Duration::from_millis(125)
        );
        assert!(p.delay(2) >= Duration::from_millis(400));
        assert!(p.delay(30) <= Duration::from_millis(1250));
    }

    #[test]
    fn auth_bodies_never_leak_into_debug() {
        let c = creds("public", None);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<redacted>"),
            "{shown}"
        );
        let body = auth_body(&c.method);
        assert_eq!(
            body["auth"]["identity"]["password"]["user"]["password"],
            "hunter2"
        );
        assert_eq!(body["auth"]["identity"]["methods"], json!(["password"]));
        assert_eq!(
            body["auth"]["scope"]["project"]["domain"],
            json!({ "id": "default" })
        );
    }
}
