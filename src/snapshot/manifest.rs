//! The manifest stored as the last member of every archive: one record per store entry
//! (path, type, mode, owner, size, mtime, sha256, link target), plus the path rules that
//! both the writer and the verifier enforce.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

/// Member name of the manifest inside the archive.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Prefix of every store member inside the archive.
pub const STORE_PREFIX: &str = "store/";
/// Version of the archive layout.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// One store entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the store, `/`-separated.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// RFC 3339 time of the copy.
    pub created: String,
    pub entries: Vec<Entry>,
    /// Sum of file sizes.
    pub total_bytes: u64,
}

/// A store-relative path must be non-empty, relative, and made of normal components only.
pub fn check_rel_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.contains('\0') {
        return Err(format!("{path:?}: NUL in path"));
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return Err(format!("{path:?}: contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{path:?}: absolute path"))
            }
            Component::CurDir => return Err(format!("{path:?}: contains '.'")),
        }
    }
    Ok(())
}

/// A symlink at `path` with `target` must stay inside the store. Only the canonical shape
/// `(../)*name/name...` is accepted: a `..` after a name could climb out through another
/// symlink that a purely lexical check would not see.
pub fn check_link_target(path: &str, target: &str) -> Result<(), String> {
    if target.is_empty() || target.contains('\0') {
        return Err(format!("{path:?}: empty or NUL link target"));
    }
    let depth = Path::new(path).components().count() - 1; // directories above the link
    let mut ups = 0usize;
    let mut seen_name = false;
    for c in Path::new(target).components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{path:?} -> {target:?}: absolute link target"))
            }
            Component::CurDir => {}
            Component::ParentDir if seen_name => {
                return Err(format!("{path:?} -> {target:?}: '..' after a name"))
            }
            Component::ParentDir => ups += 1,
            Component::Normal(_) => seen_name = true,
        }
    }
    if ups > depth {
        return Err(format!(
            "{path:?} -> {target:?}: link leads out of the store"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(check_rel_path("a/b").is_ok());
        assert!(check_rel_path("../a").is_err());
        assert!(check_rel_path("a/../../b").is_err());
        assert!(check_rel_path("/etc/passwd").is_err());
        assert!(check_rel_path("").is_err());
    }

    #[test]
    fn links() {
        assert!(check_link_target("a/l", "../b").is_ok());
        assert!(check_link_target("a/l", "b/c").is_ok());
        assert!(check_link_target("l", "../x").is_err());
        assert!(check_link_target("a/l", "../../x").is_err());
        assert!(check_link_target("a/l", "/etc").is_err());
        assert!(check_link_target("a/l", "b/../../x").is_err());
        assert!(check_link_target("l", "l2/..").is_err());
    }
}
