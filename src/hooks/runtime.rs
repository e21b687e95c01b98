//! The runtime file: where the running init's control API listens, written by the init at a
//! fixed path under the root ([`RUNTIME_FILE`]) once its listeners are bound, so that
//! `cfy-init ready|status|snapshot|restore` reach the running init without parsing a config
//! file that may have changed (or broken) since it started.
//!
//! It holds no secret: the socket path, the TCP address and the *location* of the token
//! file (the token itself stays in its own file). Written atomically (temp file, fsync,
//! rename), mode 0644 so that an exec probe running as another user can find the socket
//! (the socket's own mode still guards access).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Root;

/// Fixed location inside the root.
pub const RUNTIME_FILE: &str = "/run/cfy-init/runtime.json";

/// What a client needs to reach the running init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// cfy-init version of the running init.
    pub version: String,
    /// The init's pid, as it sees itself (1 in a container).
    pub pid: u32,
    /// Unix seconds when the listeners were bound.
    pub started: u64,
    /// The control socket (host path), when it is listening.
    pub socket: Option<PathBuf>,
    /// The TCP listener's bound address, when it is listening.
    pub tcp: Option<String>,
    /// Where the bearer token for TCP is read from (never the token).
    pub token_file: Option<PathBuf>,
}

/// The runtime file's host path under `root`.
pub fn path(root: &Root) -> PathBuf {
    root.path(Path::new(RUNTIME_FILE))
}

/// Write (replace) the runtime file crash-safely.
pub fn write(root: &Root, info: &RuntimeInfo) -> std::io::Result<()> {
    let p = path(root);
    std::fs::create_dir_all(crate::fsutil::parent_of(&p))?;
    let mut text = serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?;
    text.push(b'\n');
    crate::fsutil::write_atomic(&p, &text, 0o644)
}

/// Read the runtime file; None when it is missing or unreadable (the caller then falls back
/// to the config file).
pub fn read(root: &Root) -> Option<RuntimeInfo> {
    let text = std::fs::read(path(root)).ok()?;
    serde_json::from_slice(&text).ok()
}
