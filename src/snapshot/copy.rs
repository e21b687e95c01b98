//! The paused part of a snapshot: a copy of the store tree into a staging directory on the
//! same file system, by reflink (FICLONE) where the file system can, else by a kernel copy.
//! Owners, modes and mtimes are kept; links are copied as links, never followed.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{is_reserved, SnapshotError};

/// Copy `src` (the store) into the new directory `dst`; top-level reserved names are
/// skipped. `bytes` counts copied file bytes. Returns whether every file was reflinked.
pub fn copy_tree(src: &Path, dst: &Path, bytes: &AtomicU64) -> Result<bool, SnapshotError> {
    let mut all_reflinked = true;
    fs::create_dir(dst).map_err(|e| SnapshotError::io(dst, e))?;
    copy_dir(src, dst, true, bytes, &mut all_reflinked)?;
    let meta = fs::symlink_metadata(src).map_err(|e| SnapshotError::io(src, e))?;
    apply_meta(dst, &meta)?;
    Ok(all_reflinked)
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    top: bool,
    bytes: &AtomicU64,
    all_reflinked: &mut bool,
) -> Result<(), SnapshotError> {
    let rd = fs::read_dir(src).map_err(|e| SnapshotError::io(src, e))?;
    for item in rd {
        let item = item.map_err(|e| SnapshotError::io(src, e))?;
        if top && is_reserved(&item.file_name()) {
            continue;
        }
        let from = item.path();
        let to = dst.join(item.file_name());
        let meta = match fs::symlink_metadata(&from) {
            Ok(m) => m,
            // Gone since readdir: a writer that was not quiesced; nothing to copy.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SnapshotError::io(&from, e)),
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).map_err(|e| SnapshotError::io(&to, e))?;
            copy_dir(&from, &to, false, bytes, all_reflinked)?;
            apply_meta(&to, &meta)?;
        } else if ft.is_file() {
            *all_reflinked &= copy_file(&from, &to)?;
            apply_meta(&to, &meta)?;
            bytes.fetch_add(meta.len(), Ordering::Relaxed);
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(|e| SnapshotError::io(&from, e))?;
            std::os::unix::fs::symlink(&target, &to).map_err(|e| SnapshotError::io(&to, e))?;
            let _ = std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()));
            let mtime = filetime::FileTime::from_last_modification_time(&meta);
            filetime::set_symlink_file_times(&to, mtime, mtime)
                .map_err(|e| SnapshotError::io(&to, e))?;
        } else {
            // Sockets, FIFOs and device nodes are runtime objects, not data.
            tracing::warn!(path = %from.display(), "snapshot: skipping special file");
        }
    }
    Ok(())
}

/// Reflink `from` to the new file `to`; fall back to a kernel copy. True when reflinked.
fn copy_file(from: &Path, to: &Path) -> Result<bool, SnapshotError> {
    let src = File::open(from).map_err(|e| SnapshotError::io(from, e))?;
    let dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| SnapshotError::io(to, e))?;
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if rc == 0 {
        return Ok(true);
    }
    drop(dst);
    // std::fs::copy uses copy_file_range, which stays in the kernel.
    fs::copy(from, to).map_err(|e| SnapshotError::io(to, e))?;
    Ok(false)
}

fn apply_meta(path: &Path, meta: &fs::Metadata) -> Result<(), SnapshotError> {
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| SnapshotError::io(path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| SnapshotError::io(path, e))?;
    let mtime = filetime::FileTime::from_last_modification_time(meta);
    filetime::set_file_mtime(path, mtime).map_err(|e| SnapshotError::io(path, e))
}

/// Remove a staging tree, ignoring a missing one.
pub fn remove_tree(path: &Path) {
    match fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove staging"),
    }
}
