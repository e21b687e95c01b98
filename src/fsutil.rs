//! Crash-safe file-system primitives shared by every module that writes something that
//! matters: stage in the same directory, fsync, rename, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Fsync a directory so that a rename or create inside it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory that holds `path` ("." for a bare file name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary sibling name for `path`, unique within this process.
pub fn staging_name(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    parent_of(path).join(format!(".{name}.cfy-tmp.{}.{seq}", std::process::id()))
}

/// Replace `path` with `contents` atomically: temp file in the same directory, fsync,
/// rename, fsync the directory. When `path` exists its mode and owner are kept; otherwise
/// the file gets `default_mode`. A crash at any instant leaves either the old or the new
/// file under `path`, never a mix (at worst a stray temp file, which is ignored).
pub fn write_atomic(path: &Path, contents: &[u8], default_mode: u32) -> io::Result<()> {
    let tmp = staging_name(path);
    let old = fs::metadata(path).ok();
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(default_mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        if let Some(meta) = &old {
            f.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fsync_dir(parent_of(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_atomic_keeps_mode_of_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"new", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn write_atomic_creates_with_default_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g");
        write_atomic(&p, b"x", 0o600).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn write_atomic_into_missing_dir_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing/h");
        assert!(write_atomic(&p, b"x", 0o600).is_err());
        assert!(!p.exists());
    }
}
