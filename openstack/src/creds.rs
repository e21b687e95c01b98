//! OpenStack credentials: a cloud from `clouds.yaml` (`--os-cloud` / `OS_CLOUD`) or the
//! `OS_*` environment variables, for Keystone v3 password or application-credential auth.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::secret::Secret;

/// How to authenticate against Keystone v3.
#[derive(Debug, Clone)]
pub enum AuthMethod {
    Password {
        username: Option<String>,
        user_id: Option<String>,
        user_domain: Domain,
        password: Secret,
        project_name: Option<String>,
        project_id: Option<String>,
        project_domain: Domain,
    },
    ApplicationCredential {
        id: Option<String>,
        name: Option<String>,
        username: Option<String>,
        user_domain: Domain,
        secret: Secret,
    },
}

/// A domain given by name or id (defaults to the `Default` domain's id, as the clients do).
#[derive(Debug, Clone, Default)]
pub struct Domain {
    pub name: Option<String>,
    pub id: Option<String>,
}

/// Everything needed to reach one cloud.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Keystone URL, normalised to end with `/v3`.
    pub auth_url: String,
    pub method: AuthMethod,
    pub region: Option<String>,
    /// Endpoint interface from the catalog: `public` (default), `internal` or `admin`.
    pub interface: String,
    /// Where they came from, for messages (`clouds.yaml: PATH (cloud NAME)` or `OS_* variables`).
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("no OpenStack credentials: set OS_CLOUD (or --os-cloud) to a cloud in clouds.yaml, or export OS_AUTH_URL and the other OS_* variables")]
    Missing,
    #[error("{}: cannot read clouds.yaml: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("cloud `{cloud}` not found: no clouds.yaml defines it (searched {searched})")]
    UnknownCloud { cloud: String, searched: String },
    #[error("{source_name}: {msg}")]
    Incomplete { source_name: String, msg: String },
}

/// The files searched for `clouds.yaml`, in order (as openstacksdk does).
pub fn clouds_yaml_candidates(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(f) = env("OS_CLIENT_CONFIG_FILE") {
        out.push(PathBuf::from(f));
    }
    out.push(PathBuf::from("clouds.yaml"));
    let config_home = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")));
    if let Some(dir) = config_home {
        out.push(dir.join("openstack/clouds.yaml"));
    }
    out.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    out
}

#[derive(Debug, Deserialize)]
struct CloudsFile {
    #[serde(default)]
    clouds: BTreeMap<String, CloudEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct CloudEntry {
    #[serde(default)]
    auth: AuthEntry,
    auth_type: Option<String>,
    region_name: Option<String>,
    interface: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    auth_url: Option<String>,
    username: Option<String>,
    user_id: Option<String>,
    password: Option<Secret>,
    project_name: Option<String>,
    project_id: Option<String>,
    user_domain_name: Option<String>,
    user_domain_id: Option<String>,
    project_domain_name: Option<String>,
    project_domain_id: Option<String>,
    domain_name: Option<String>,
    domain_id: Option<String>,
    application_credential_id: Option<String>,
    application_credential_name: Option<String>,
    application_credential_secret: Option<Secret>,
}

/// Load credentials: `cloud` (from `--os-cloud`, else `OS_CLOUD`) from clouds.yaml, else
/// the `OS_*` variables. `env` is the environment (injected for tests).
pub fn load(
    cloud: Option<&str>,
    interface_override: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, CredsError> {
    let cloud = cloud.map(str::to_owned).or_else(|| env("OS_CLOUD"));
    let mut creds = match cloud {
        Some(name) => from_clouds_yaml(&name, env)?,
        None if env("OS_AUTH_URL").is_some() => from_env(env)?,
        None => return Err(CredsError::Missing),
    };
    if let Some(i) = interface_override {
        creds.interface = i.to_owned();
    }
    Ok(creds)
}

/// [`load`] for a named cloud, with `clouds_file` (when given) searched instead of the
/// usual places (cfy-init's `snapshot.remote.clouds_file`).
pub fn load_cloud(
    cloud: &str,
    clouds_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, CredsError> {
    match clouds_file {
        Some(f) => {
            let f = f.display().to_string();
            let env = |k: &str| match k {
                "OS_CLIENT_CONFIG_FILE" => Some(f.clone()),
                "XDG_CONFIG_HOME" | "HOME" => None,
                _ => env(k),
            };
            from_clouds_yaml_only(cloud, &env)
        }
        None => from_clouds_yaml(cloud, env),
    }
}

fn from_clouds_yaml_only(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, CredsError> {
    let file = env("OS_CLIENT_CONFIG_FILE").map(PathBuf::from);
    let Some(path) = file else {
        return Err(CredsError::Missing);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| CredsError::Read {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    find_in(&path, &text, name, env)?.ok_or_else(|| CredsError::UnknownCloud {
        cloud: name.to_owned(),
        searched: path.display().to_string(),
    })
}

fn find_in(
    path: &Path,
    text: &str,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, CredsError> {
    let file: CloudsFile = serde_norway::from_str(text).map_err(|e| CredsError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    match file.clouds.into_iter().find(|(k, _)| k == name) {
        Some((_, entry)) => {
            let source = format!("{} (cloud {name})", path.display());
            entry_to_creds(entry, source, env).map(Some)
        }
        None => Ok(None),
    }
}

fn from_clouds_yaml(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, CredsError> {
    let candidates = clouds_yaml_candidates(env);
    for path in &candidates {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        if let Some(c) = find_in(path, &text, name, env)? {
            return Ok(c);
        }
    }
    Err(CredsError::UnknownCloud {
        cloud: name.to_owned(),
        searched: candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, CredsError> {
    let entry = CloudEntry {
        auth: AuthEntry {
            auth_url: env("OS_AUTH_URL"),
            username: env("OS_USERNAME"),
            user_id: env("OS_USER_ID"),
            password: env("OS_PASSWORD").map(Secret::new),
            project_name: env("OS_PROJECT_NAME").or_else(|| env("OS_TENANT_NAME")),
            project_id: env("OS_PROJECT_ID").or_else(|| env("OS_TENANT_ID")),
            user_domain_name: env("OS_USER_DOMAIN_NAME"),
            user_domain_id: env("OS_USER_DOMAIN_ID"),
            project_domain_name: env("OS_PROJECT_DOMAIN_NAME"),
            project_domain_id: env("OS_PROJECT_DOMAIN_ID"),
            domain_name: env("OS_DOMAIN_NAME"),
            domain_id: env("OS_DOMAIN_ID"),
            application_credential_id: env("OS_APPLICATION_CREDENTIAL_ID"),
            application_credential_name: env("OS_APPLICATION_CREDENTIAL_NAME"),
            application_credential_secret: env("OS_APPLICATION_CREDENTIAL_SECRET").map(Secret::new),
        },
        auth_type: env("OS_AUTH_TYPE"),
        region_name: env("OS_REGION_NAME"),
        interface: env("OS_INTERFACE").or_else(|| env("OS_ENDPOINT_TYPE")),
    };
    entry_to_creds(entry, "OS_* variables".into(), env)
}

fn entry_to_creds(
    e: CloudEntry,
    source: String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, CredsError> {
    let incomplete = |msg: &str| CredsError::Incomplete {
        source_name: source.clone(),
        msg: msg.to_owned(),
    };
    let a = e.auth;
    let auth_url = a
        .auth_url
        .ok_or_else(|| incomplete("auth_url (OS_AUTH_URL) is missing"))?;
    let auth_url = normalise_auth_url(&auth_url);
    let domain = |name: Option<String>, id: Option<String>| Domain {
        name: name.or(a.domain_name.clone()),
        id: id.or(a.domain_id.clone()),
    };
    let app_cred = matches!(
        e.auth_type.as_deref(),
        Some("v3applicationcredential" | "applicationcredential" | "v3_application_credential")
    ) || a.application_credential_secret.is_some();
    let method = if app_cred {
        let secret = a.application_credential_secret.ok_or_else(|| {
            incomplete(
                "application_credential_secret (OS_APPLICATION_CREDENTIAL_SECRET) is missing",
            )
        })?;
        if a.application_credential_id.is_none()
            && (a.application_credential_name.is_none()
                || (a.username.is_none() && a.user_id.is_none()))
        {
            return Err(incomplete(
                "application_credential_id, or application_credential_name with username, is needed",
            ));
        }
        AuthMethod::ApplicationCredential {
            id: a.application_credential_id,
            name: a.application_credential_name,
            username: a.username,
            user_domain: domain(a.user_domain_name, a.user_domain_id),
            secret,
        }
    } else {
        let password = a
            .password
            .ok_or_else(|| incomplete("password (OS_PASSWORD) is missing"))?;
        if a.username.is_none() && a.user_id.is_none() {
            return Err(incomplete("username (OS_USERNAME) is missing"));
        }
        if a.project_name.is_none() && a.project_id.is_none() {
            return Err(incomplete(
                "project_name or project_id (OS_PROJECT_NAME / OS_PROJECT_ID) is missing",
            ));
        }
        AuthMethod::Password {
            username: a.username,
            user_id: a.user_id,
            user_domain: domain(a.user_domain_name, a.user_domain_id),
            password,
            project_name: a.project_name,
            project_id: a.project_id,
            project_domain: domain(a.project_domain_name, a.project_domain_id),
        }
    };
    let _ = env;
    Ok(Credentials {
        auth_url,
        method,
        region: e.region_name,
        interface: e.interface.unwrap_or_else(|| "public".into()),
        source,
    })
}

/// Keystone's URL as given may or may not carry the version; we always speak v3.
fn normalise_auth_url(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    if trimmed.ends_with("/v3") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v3")
    }
}

impl Domain {
    /// The JSON Keystone expects; the `Default` domain when nothing was given.
    pub fn to_json(&self) -> serde_json::Value {
        match (&self.id, &self.name) {
            (Some(id), _) => serde_json::json!({ "id": id }),
            (None, Some(name)) => serde_json::json!({ "name": name }),
            (None, None) => serde_json::json!({ "id": "default" }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn nothing_set_is_a_clear_error() {
        let err = load(None, None, &env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("OS_CLOUD"), "{err}");
    }

    #[test]
    fn os_variables_password() {
        let env = env_of(&[
            ("OS_AUTH_URL", "http://k:5000/"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p4ss"),
            ("OS_PROJECT_NAME", "proj"),
            ("OS_USER_DOMAIN_NAME", "Default"),
        ]);
        let c = load(None, None, &env).unwrap();
        assert_eq!(c.auth_url, "http://k:5000/v3");
        assert_eq!(c.interface, "public");
        assert!(!format!("{c:?}").contains("p4ss"));
        assert!(matches!(c.method, AuthMethod::Password { .. }));
    }

    #[test]
    fn missing_password_names_the_variable() {
        let env = env_of(&[("OS_AUTH_URL", "http://k/v3"), ("OS_USERNAME", "u")]);
        let err = load(None, None, &env).unwrap_err().to_string();
        assert!(err.contains("OS_PASSWORD"), "{err}");
    }

    #[test]
    fn clouds_yaml_application_credential_and_interface() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("clouds.yaml");
        std::fs::write(
            &f,
            "clouds:\n  prod:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: https://k/identity\n      application_credential_id: abc\n      application_credential_secret: s3cr3t\n    region_name: R1\n    interface: internal\n",
        )
        .unwrap();
        let fs = f.display().to_string();
        let env = env_of(&[("OS_CLIENT_CONFIG_FILE", &fs), ("OS_CLOUD", "prod")]);
        let c = load(None, None, &env).unwrap();
        assert_eq!(c.auth_url, "https://k/identity/v3");
        assert_eq!(c.interface, "internal");
        assert_eq!(c.region.as_deref(), Some("R1"));
        assert!(matches!(c.method, AuthMethod::ApplicationCredential { .. }));
        let c = load(Some("prod"), Some("admin"), &env).unwrap();
        assert_eq!(c.interface, "admin");
        let err = load(Some("nope"), None, &env).unwrap_err().to_string();
        assert!(err.contains("cloud `nope` not found"), "{err}");
    }
}
