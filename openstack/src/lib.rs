//! The OpenStack client parts that cfy-init (Swift copies of snapshots) and cfy-recover
//! (rebuilding the manager) share.
//!
//! | module      | owns                                                               |
//! |-------------|--------------------------------------------------------------------|
//! | [`secret`]  | [`Secret`], a string never printed                                 |
//! | [`creds`]   | clouds.yaml / `OS_*` credentials (password, application credential) |
//! | [`session`] | the Keystone v3 session: token, catalog, renewal on expiry and 401  |
//! | [`swift`]   | snapshot copies in Swift: segmented, checked, resumable, retried    |
//!
//! Evaluated and not used: the `openstack_sdk` crate (0.22.8, with only `async`, `identity`
//! and `object_store`). What it does well: clouds.yaml with secure.yaml and vendor profiles,
//! every Keystone auth plugin, catalog and version discovery, a 401 retry of buffered
//! requests, token auto-renewal. Why it is not used here:
//! - cost in a static PID 1: a program that only authenticates is 7.0 MB in our release
//!   profile, 3 min 44 s to build on 2 cores (253 crates); it brings a second HTTP stack
//!   (reqwest 0.13 beside the 0.12 cfy-init links), aws-lc-sys (C) and ring, and makes the
//!   interactive and browser auth plugins (dialoguer, `open`, a local web-SSO server)
//!   mandatory dependencies; it needs Rust 1.91 and edition 2024;
//! - what the Swift copies need is missing: its streamed object upload and download
//!   (`rest_read_body_async`, `download_async`) have no 401 re-auth, no 503/429 retry and
//!   no Retry-After; large-object segments, resume and checksums are not there at all;
//! - its token cache writes tokens under the home directory unless disabled per client.
//!
//! So Keystone and Swift are spoken here on reqwest 0.12 in ~600 lines: two auth methods,
//! one catalog lookup and a dozen object-store calls.

pub mod creds;
pub mod secret;
pub mod session;
pub mod swift;

pub use secret::Secret;

/// The human message inside an OpenStack error body (`{"itemNotFound": {"message": ..}}`,
/// `{"NeutronError": {"message": ..}}`, `{"error": {"message": ..}}`), else the text.
pub fn error_message(text: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        v.as_object()?
            .values()
            .find_map(|inner| inner.get("message")?.as_str().map(str::to_owned))
            .or_else(|| v.get("message")?.as_str().map(str::to_owned))
    });
    from_json.unwrap_or_else(|| {
        let t = text.trim();
        if t.is_empty() {
            "(empty body)".into()
        } else {
            t.chars().take(200).collect()
        }
    })
}
