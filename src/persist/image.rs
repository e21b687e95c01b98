//! The identity of the running image: the environment variable named by
//! `persist.image_id.env` when set, else a SHA-256 over the configured files' paths and
//! contents (missing files skipped), else `unknown`. Recorded per directory in the state
//! file; `on_new_image: add-missing` acts when it differs from the recorded one.

use sha2::{Digest, Sha256};

use super::ImageIdConfig;
use crate::config::Root;

/// Identity used when nothing identifies the image; never triggers `add-missing`.
pub const UNKNOWN: &str = "unknown";

pub fn identify(cfg: &ImageIdConfig, root: &Root) -> String {
    if !cfg.env.is_empty() {
        if let Ok(v) = std::env::var(&cfg.env) {
            if !v.trim().is_empty() {
                return format!("env:{}", v.trim());
            }
        }
    }
    let mut hash = Sha256::new();
    let mut any = false;
    for f in &cfg.files {
        if let Ok(bytes) = std::fs::read(f) {
            let shown = root.unroot(f).unwrap_or_else(|| f.clone());
            hash.update(shown.to_string_lossy().as_bytes());
            hash.update([0]);
            hash.update(&bytes);
            any = true;
        }
    }
    if any {
        format!("sha256:{}", hex::encode(hash.finalize()))
    } else {
        UNKNOWN.to_string()
    }
}
