//! The OpenStack client: microversion-pinned requests to Nova / Neutron / Cinder on the shared
//! Keystone session (`cfy_openstack::session`: auth, catalog, token renewal), with retries of
//! 5xx, timeouts and dropped connections, and rate limits (429, 413, 503) waited out as
//! `Retry-After` says within the step's budget.
//!
//! Written on plain reqwest with typed models ([`models`]) rather than on `openstack_sdk`
//! (evaluated in the shared crate's top comment): we need ~20 calls, explicit microversions
//! checked in every answer, and full control over which calls may be retried (a create that
//! may have happened is never sent again blindly).

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
    /// The longest total wait for rate limits and overloads (429, 413, 503) in one call:
    /// the step's own budget.
    pub budget: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            attempts: 6,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            timeout: Duration::from_secs(30),
            budget: Duration::from_secs(600),
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
        /// `Retry-After` of the answer (seconds or an HTTP date), when it said.
        retry_after: Option<Duration>,
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
    /// A conditional update (`If-Match`) found the resource changed since it was read.
    pub fn is_precondition_failed(&self) -> bool {
        self.status() == Some(412)
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

/// An authenticated connection to one cloud. Keystone (token, catalog, renewal before expiry
/// and after a 401) is the shared [`cfy_openstack::session::Session`]; what stays here is
/// what Nova, Neutron and Cinder need and `openstack_sdk` does not give us (see the shared
/// crate's top comment for the evaluation): pinned microversions checked in every answer,
/// and explicit control of which calls are retried (never a create that may have happened).
pub struct Cloud {
    http: reqwest::Client,
    session: cfy_openstack::session::Session,
    pub policy: Policy,
    /// The endpoints of the catalog of the token they were read from.
    endpoints: Mutex<Option<(String, Endpoints)>>,
    /// How many times a rate limit or an overloaded service (429, 413, 503) was waited out.
    throttled: std::sync::atomic::AtomicU64,
}

fn auth_error(e: cfy_openstack::session::AuthError) -> CloudError {
    use cfy_openstack::session::AuthError;
    match e {
        AuthError::Auth { url, reason } => CloudError::Auth { url, reason },
        AuthError::Catalog {
            what,
            interface,
            region,
        } => CloudError::Catalog {
            what,
            interface,
            region,
        },
    }
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
        let session =
            cfy_openstack::session::Session::new(creds, policy.timeout).map_err(auth_error)?;
        Ok(Cloud {
            http,
            session,
            policy,
            endpoints: Mutex::new(None),
            throttled: Default::default(),
        })
    }

    /// An object-store client on the same credentials (its own token), for the manager's
    /// off-host snapshot copies.
    pub fn swift(&self) -> Result<cfy_openstack::swift::Swift, cfy_openstack::swift::SwiftError> {
        let session = cfy_openstack::session::Session::new(
            self.session.credentials().clone(),
            self.policy.timeout,
        )?;
        cfy_openstack::swift::Swift::new(
            std::sync::Arc::new(session),
            cfy_openstack::swift::RetryPolicy::default(),
        )
    }

    pub fn credentials_source(&self) -> &str {
        &self.session.credentials().source
    }

    /// Keystone tokens issued so far (a short token lifetime shows as several).
    pub fn tokens_issued(&self) -> u64 {
        self.session.tokens_issued()
    }

    /// The project the token is scoped to.
    pub async fn project_id(&self) -> Option<String> {
        self.session.token().await.ok()?.project_id.clone()
    }

    /// Rate limits and overloads (429, 413, 503) waited out so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Authenticate (when no valid token is held) and check the catalog has our services.
    pub async fn authenticate(&self) -> Result<(), CloudError> {
        let t = self.session.token().await.map_err(auth_error)?;
        self.endpoints_for(&t).map(|_| ())
    }

    fn endpoints_for(&self, t: &cfy_openstack::session::Token) -> Result<Endpoints, CloudError> {
        let mut cached = self.endpoints.lock().unwrap();
        if let Some((tok, e)) = cached.as_ref() {
            if tok == t.value.expose() {
                return Ok(e.clone());
            }
        }
        let e = self.endpoints_from(&t.catalog)?;
        *cached = Some((t.value.expose().to_owned(), e.clone()));
        Ok(e)
    }

    fn endpoints_from(&self, catalog: &Value) -> Result<Endpoints, CloudError> {
        let creds = self.session.credentials();
        let find = |types: &[&str], what: &str| -> Result<String, CloudError> {
            for t in types {
                if let Some(url) = catalog_url(catalog, t, creds) {
                    return Ok(url.trim_end_matches('/').to_owned());
                }
            }
            Err(CloudError::Catalog {
                what: what.to_owned(),
                interface: creds.interface.clone(),
                region: creds
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

    /// One call with JSON in and out, retried per `retry`; a refused token (401) is renewed
    /// once. A rate limit or an overloaded service (429, 413 over-limit, 503) is waited out
    /// for every kind of call (the request was not carried out), honouring `Retry-After`,
    /// as long as the waits stay within [`Policy::budget`].
    pub async fn call(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Value, CloudError> {
        self.call_with(service, method, path, body, retry, &[])
            .await
    }

    /// [`Cloud::call`] with extra request headers (e.g. `If-Match`).
    pub async fn call_with(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
        headers: &[(&str, String)],
    ) -> Result<Value, CloudError> {
        let mut attempt = 0;
        let mut reauthed = false;
        let mut throttled_for = Duration::ZERO;
        loop {
            let token = self.session.token().await.map_err(auth_error)?;
            let endpoints = self.endpoints_for(&token)?;
            let result = self
                .send_once(
                    &endpoints,
                    token.value.expose(),
                    service,
                    &method,
                    path,
                    Outgoing { body, headers },
                )
                .await;
            match result {
                Err(CloudError::Http { status: 401, .. }) if !reauthed => {
                    reauthed = true;
                    self.session.invalidate(&token).await;
                }
                Err(
                    ref e @ CloudError::Http {
                        status: 429 | 413 | 503,
                        retry_after,
                        ..
                    },
                ) if e.status() != Some(503) || retry == Retry::Idempotent => {
                    let delay = retry_after
                        .unwrap_or_else(|| self.policy.delay(attempt.min(6)))
                        .max(Duration::from_millis(100));
                    if throttled_for + delay > self.policy.budget {
                        return result;
                    }
                    throttled_for += delay;
                    self.throttled
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        error = %e,
                        retry_in = ?delay,
                        waited = ?throttled_for,
                        budget = ?self.policy.budget,
                        "throttled by the cloud, waiting as told"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
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

    /// One try of a call (no retries, no re-authentication).
    async fn send_once(
        &self,
        endpoints: &Endpoints,
        token: &str,
        service: Service,
        method: &Method,
        path: &str,
        Outgoing { body, headers }: Outgoing<'_>,
    ) -> Result<Value, CloudError> {
        let base = match service {
            Service::Compute => &endpoints.compute,
            Service::Network => &endpoints.network,
            Service::Volume => &endpoints.volume,
        };
        let mut req = self
            .http
            .request(method.clone(), format!("{base}{path}"))
            .header("X-Auth-Token", token)
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
        for (name, value) in headers {
            req = req.header(*name, value);
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
        let header = |k: &str| {
            resp.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let echoed = header("OpenStack-API-Version");
        let retry_after = header("Retry-After").and_then(|v| parse_retry_after(&v));
        let text = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(CloudError::Http {
                service: service.name(),
                method: method.clone(),
                path: path.to_owned(),
                status: status.as_u16(),
                message: error_message(&text),
                retry_after,
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

/// `Retry-After: 5` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`, as a delay from now.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate(v)?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form HTTP dates are sent in.
fn httpdate(v: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, mon, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| x == mon)? + 1;
    let iso = format!("{year}-{m:02}-{:0>2}T{time}Z", day);
    humantime::parse_rfc3339(&iso).ok()
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

/// What a request sends besides its method and path: the JSON body and extra headers.
struct Outgoing<'a> {
    body: Option<&'a Value>,
    headers: &'a [(&'a str, String)],
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
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO),
            "a date in the past: now"
        );
        let later = std::time::SystemTime::now() + Duration::from_secs(90);
        let text = humantime::format_rfc3339_seconds(later).to_string();
        // 2026-12-02T14:00:00Z -> Wed, 02 Dec 2026 14:00:00 GMT (the weekday is not checked)
        let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
        let [y, m, d]: [&str; 3] = date.split('-').collect::<Vec<_>>().try_into().unwrap();
        let mon = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ][m.parse::<usize>().unwrap() - 1];
        let got = parse_retry_after(&format!("Wed, {d} {mon} {y} {time} GMT")).unwrap();
        assert!(
            got > Duration::from_secs(80) && got <= Duration::from_secs(90),
            "{got:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = Policy {
            attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            budget: Duration::from_secs(1),
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
