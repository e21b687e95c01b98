//! A Keystone v3 session: password or application-credential auth, the service catalog,
//! and the token renewed before it expires and again whenever a service answers 401.
//!
//! Hand-written on reqwest 0.12 (the client cfy-init already links) rather than taken from
//! `openstack_sdk`: see the crate's top comment for the evaluation.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::creds::{AuthMethod, Credentials};
use crate::Secret;

/// A token this close to its expiry is renewed before use, so that a long upload does not
/// start a request with a token that dies in flight; at most half the token's lifetime (a
/// cloud with tokens shorter than twice the margin would otherwise get a login per call).
pub const RENEW_MARGIN: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Keystone authentication at {url} failed: {reason}")]
    Auth { url: String, reason: String },
    #[error("the service catalog has no {what} endpoint (interface {interface}{region}); check the interface / region_name")]
    Catalog {
        what: String,
        interface: String,
        region: String,
    },
}

/// One issued token with its catalog.
#[derive(Debug)]
pub struct Token {
    pub value: Secret,
    /// `expires_at` from Keystone, when it said.
    pub expires_at: Option<SystemTime>,
    /// `issued_at` from Keystone, when it said.
    pub issued_at: Option<SystemTime>,
    pub catalog: Value,
    /// The project the token is scoped to (`token.project.id`), when scoped.
    pub project_id: Option<String>,
}

impl Token {
    fn fresh(&self, now: SystemTime) -> bool {
        let Some(t) = self.expires_at else {
            return true;
        };
        let life = self.issued_at.and_then(|i| t.duration_since(i).ok());
        let margin = life.map_or(RENEW_MARGIN, |l| RENEW_MARGIN.min(l / 2));
        now + margin < t
    }
}

/// An authenticated session with one cloud; cheap to share (`Arc` inside).
pub struct Session {
    http: reqwest::Client,
    creds: Credentials,
    current: tokio::sync::Mutex<Option<Arc<Token>>>,
    /// How many tokens were issued (for tests and logs).
    issued: std::sync::atomic::AtomicU64,
}

impl Session {
    pub fn new(creds: Credentials, timeout: Duration) -> Result<Session, AuthError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| AuthError::Auth {
                url: creds.auth_url.clone(),
                reason: e.to_string(),
            })?;
        Ok(Session {
            http,
            creds,
            current: tokio::sync::Mutex::new(None),
            issued: Default::default(),
        })
    }

    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// Tokens issued so far by this session.
    pub fn tokens_issued(&self) -> u64 {
        self.issued.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A token valid for at least [`RENEW_MARGIN`]: the current one, or a new one.
    pub async fn token(&self) -> Result<Arc<Token>, AuthError> {
        let mut cur = self.current.lock().await;
        if let Some(t) = cur.as_ref() {
            if t.fresh(SystemTime::now()) {
                return Ok(t.clone());
            }
            tracing::info!("Keystone token near its expiry: renewing");
        }
        let t = Arc::new(self.issue().await?);
        *cur = Some(t.clone());
        Ok(t)
    }

    /// A service refused `rejected` (401): drop it so that the next [`Session::token`]
    /// issues a new one. A token already replaced by another caller is left alone.
    pub async fn invalidate(&self, rejected: &Token) {
        let mut cur = self.current.lock().await;
        if cur
            .as_ref()
            .is_some_and(|t| t.value.expose() == rejected.value.expose())
        {
            tracing::info!("Keystone token refused by a service: renewing");
            *cur = None;
        }
    }

    /// The URL of the first of `types` found in the catalog for our interface and region.
    pub async fn endpoint(&self, types: &[&str], what: &str) -> Result<String, AuthError> {
        let t = self.token().await?;
        types
            .iter()
            .find_map(|k| catalog_url(&t.catalog, k, &self.creds))
            .map(|u| u.trim_end_matches('/').to_owned())
            .ok_or_else(|| AuthError::Catalog {
                what: what.to_owned(),
                interface: self.creds.interface.clone(),
                region: self
                    .creds
                    .region
                    .as_ref()
                    .map(|r| format!(", region {r}"))
                    .unwrap_or_default(),
            })
    }

    async fn issue(&self) -> Result<Token, AuthError> {
        let url = format!("{}/auth/tokens", self.creds.auth_url);
        let auth_err = |reason: String| AuthError::Auth {
            url: self.creds.auth_url.clone(),
            reason,
        };
        let body = auth_body(&self.creds.method);
        let mut attempt = 0u32;
        let resp = loop {
            match self.http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_server_error() && attempt < 4 => {}
                Ok(r) => break r,
                Err(e) if attempt >= 4 => return Err(auth_err(e.to_string())),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(500) * (1 << attempt)).await;
            attempt += 1;
        };
        let status = resp.status();
        let value = resp
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(Secret::new);
        let text = resp.text().await.map_err(|e| auth_err(e.to_string()))?;
        if !status.is_success() {
            return Err(auth_err(format!(
                "HTTP {}: {} (check the credentials from {})",
                status.as_u16(),
                crate::error_message(&text),
                self.creds.source
            )));
        }
        let value = value.ok_or_else(|| auth_err("no X-Subject-Token header".into()))?;
        let mut doc: Value = serde_json::from_str(&text).map_err(|e| auth_err(e.to_string()))?;
        let token = doc["token"].take();
        let time = |k: &str| {
            token[k]
                .as_str()
                .and_then(|s| humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok())
        };
        let (expires_at, issued_at) = (time("expires_at"), time("issued_at"));
        self.issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Token {
            value,
            expires_at,
            issued_at,
            project_id: token["project"]["id"].as_str().map(str::to_owned),
            catalog: token["catalog"].clone(),
        })
    }
}

/// The request body of `POST /v3/auth/tokens`.
pub fn auth_body(method: &AuthMethod) -> Value {
    match method {
        AuthMethod::Password {
            username,
            user_id,
            user_domain,
            password,
            project_name,
            project_id,
            project_domain,
        } => {
            let user = match user_id {
                Some(id) => json!({ "id": id, "password": password.expose() }),
                None => json!({
                    "name": username, "domain": user_domain.to_json(),
                    "password": password.expose(),
                }),
            };
            let project = match project_id {
                Some(id) => json!({ "id": id }),
                None => json!({ "name": project_name, "domain": project_domain.to_json() }),
            };
            json!({ "auth": {
                "identity": { "methods": ["password"], "password": { "user": user } },
                "scope": { "project": project },
            }})
        }
        AuthMethod::ApplicationCredential {
            id,
            name,
            username,
            user_domain,
            secret,
        } => {
            let cred = match id {
                Some(id) => json!({ "id": id, "secret": secret.expose() }),
                None => json!({
                    "name": name, "secret": secret.expose(),
                    "user": { "name": username, "domain": user_domain.to_json() },
                }),
            };
            json!({ "auth": { "identity": {
                "methods": ["application_credential"], "application_credential": cred,
            }}})
        }
    }
}

/// The URL of service `kind` for the configured interface and region.
pub fn catalog_url(catalog: &Value, kind: &str, creds: &Credentials) -> Option<String> {
    let entry = catalog
        .as_array()?
        .iter()
        .find(|e| e["type"].as_str() == Some(kind))?;
    entry["endpoints"]
        .as_array()?
        .iter()
        .find(|ep| {
            let iface = ep["interface"].as_str() == Some(creds.interface.as_str());
            let region = match &creds.region {
                None => true,
                Some(r) => ep["region_id"].as_str() == Some(r) || ep["region"].as_str() == Some(r),
            };
            iface && region
        })
        .and_then(|ep| ep["url"].as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_before_its_expiry() {
        let now = SystemTime::now();
        let t = |secs: u64| Token {
            value: Secret::new("t"),
            expires_at: Some(now + Duration::from_secs(secs)),
            issued_at: None,
            catalog: Value::Null,
            project_id: None,
        };
        assert!(t(3600).fresh(now));
        assert!(!t(60).fresh(now));
        // A 10 s token is used for its first half, not renewed before every call.
        let short = |age: u64| Token {
            issued_at: Some(now - Duration::from_secs(age)),
            ..t(10 - age)
        };
        assert!(short(0).fresh(now));
        assert!(short(4).fresh(now));
        assert!(!short(6).fresh(now));
        let keystone = "2026-12-02T15:00:00.000000Z";
        assert!(humantime::parse_rfc3339_weak(keystone.trim_end_matches('Z')).is_ok());
    }
}
