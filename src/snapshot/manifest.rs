//! The manifest stored as the last member of every archive: one record per store entry
//! (path, type, mode, owner, size, mtime, sha256, link target, xattrs), plus the path rules that
//! both the writer and the verifier enforce.

use std::collections::BTreeMap;

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
    /// A symbolic link; `link` is its target, any string (absolute, relative, dangling):
    /// it is stored and restored as a link and never followed.
    Symlink,
    /// A further name of a file archived earlier; `link` is that file's store path.
    Hardlink,
    Fifo,
}

/// One store entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the store, `/`-separated.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    /// Nanoseconds of the mtime.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtime_nsec: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target, or the store path a hard link names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Extended attributes (`user.*`, `security.*`, `trusted.*`, and the POSIX ACLs as
    /// `system.posix_acl_*`), name to hex-encoded value.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "bounded_xattrs"
    )]
    pub xattrs: BTreeMap<String, String>,
    /// The file had holes; they are made again on restore.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
}

/// Most extended attributes one entry may list (an untrusted manifest is read one entry at
/// a time; this keeps one entry small).
pub const MAX_XATTRS: usize = 4096;

fn bounded_xattrs<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a map of at most {MAX_XATTRS} extended attributes")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = m.next_entry::<String, String>()? {
                if out.len() >= MAX_XATTRS {
                    return Err(serde::de::Error::custom("too many extended attributes"));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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

/// Longest file name (one path component), as Linux file systems allow.
pub const NAME_MAX: usize = 255;
/// Longest store-relative path.
pub const PATH_MAX: usize = 4095;

/// A store-relative path must be non-empty and relative, made of `/`-separated names that
/// are neither empty (`//`), `.` nor `..`, and short enough for the file system.
pub fn check_rel_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.contains('\0') {
        return Err(format!("{path:?}: NUL in path"));
    }
    if path.starts_with('/') {
        return Err(format!("{path:?}: absolute path"));
    }
    if path.len() > PATH_MAX {
        return Err(format!(
            "{:?}...: path of {} bytes is over the limit of {PATH_MAX}",
            path.chars().take(64).collect::<String>(),
            path.len()
        ));
    }
    for c in path.split('/') {
        match c {
            "" => return Err(format!("{path:?}: empty name ('//')")),
            "." => return Err(format!("{path:?}: contains '.'")),
            ".." => return Err(format!("{path:?}: contains '..'")),
            c if c.len() > NAME_MAX => {
                return Err(format!(
                    "{path:?}: a name of {} bytes is over the limit of {NAME_MAX}",
                    c.len()
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A symlink target may be anything a link can hold (it is never followed): not empty,
/// no NUL, not longer than a path.
pub fn check_link_target(path: &str, target: &str) -> Result<(), String> {
    if target.is_empty() || target.contains('\0') {
        return Err(format!("{path:?}: empty or NUL link target"));
    }
    if target.len() > PATH_MAX {
        return Err(format!("{path:?}: link target over {PATH_MAX} bytes"));
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
        assert!(check_rel_path("./a").unwrap_err().contains("'.'"));
        assert!(check_rel_path("a/./b").unwrap_err().contains("'.'"));
        assert!(check_rel_path("a//b").unwrap_err().contains("'//'"));
        let long = "x".repeat(256);
        assert!(check_rel_path(&long)
            .unwrap_err()
            .contains("over the limit"));
        assert!(check_rel_path(&"a/".repeat(2048))
            .unwrap_err()
            .contains("over the limit"));
    }

    #[test]
    fn links_may_point_anywhere() {
        assert!(check_link_target("a/l", "../b").is_ok());
        assert!(check_link_target("l", "/etc/machine-id").is_ok());
        assert!(check_link_target("l", "../../x").is_ok());
        assert!(check_link_target("l", "").is_err());
    }
}
