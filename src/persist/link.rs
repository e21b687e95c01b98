//! Tying each image directory to its copy in the store: a symlink (the image directory
//! moves to `<dir>-initial` only when it is a real directory; a correct link is left alone,
//! any other link is replaced atomically) or a bind mount. Also removes the stray link the
//! legacy script's restart bug left inside `<dir>-initial`.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{fault, LinkMode, LinkOutcome, PersistError};
use crate::fsutil;

/// `<dir>-initial`, where the image's own copy of a linked directory is kept.
pub fn initial_of(dir: &Path) -> PathBuf {
    let mut name: OsString = dir.file_name().unwrap_or_default().to_os_string();
    name.push("-initial");
    dir.with_file_name(name)
}

/// Link `dir` (host path) to `copy` (its copy in the store, host path). `legacy_target`
/// is the copy's path as seen inside the container (what the legacy script linked to).
pub fn link(
    mode: LinkMode,
    dir: &Path,
    copy: &Path,
    legacy_target: &Path,
) -> Result<(LinkOutcome, Vec<String>), PersistError> {
    match mode {
        LinkMode::Symlink => symlink(dir, copy, legacy_target),
        LinkMode::Bind => bind(dir, copy).map(|o| (o, Vec::new())),
    }
}

fn symlink(
    dir: &Path,
    copy: &Path,
    legacy_target: &Path,
) -> Result<(LinkOutcome, Vec<String>), PersistError> {
    let mut notes = Vec::new();
    let initial = initial_of(dir);
    if let Some(note) = remove_legacy_stray_link(dir, &initial, copy, legacy_target)? {
        notes.push(note);
    }
    let outcome = match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            let current =
                fs::read_link(dir).map_err(|e| PersistError::io(dir, "cannot read link", e))?;
            // Compare bytes: Path equality would call `/s//var/lib` and `/s/var/lib` equal.
            if current.as_os_str() == copy.as_os_str() {
                return Ok((LinkOutcome::AlreadyLinked, notes));
            }
            replace_with_symlink(dir, copy)?;
            tracing::info!(dir = %dir.display(), old = %current.display(), new = %copy.display(), "replaced link");
            notes.push(format!("replaced link to {}", current.display()));
            LinkOutcome::Replaced
        }
        Ok(m) if m.is_dir() && move_was_committed(&initial) => {
            finish_committed_move(dir, &initial, copy)?;
            LinkOutcome::Linked
        }
        Ok(m) if m.is_dir() => {
            if fs::symlink_metadata(&initial).is_ok() {
                return Err(PersistError::Layout {
                    path: dir.to_path_buf(),
                    problem: format!("is a real directory but {} exists too", initial.display()),
                    fix: format!(
                        "move {} away (it holds an older image copy)",
                        initial.display()
                    ),
                });
            }
            move_to_initial(dir, &initial, copy)?;
            LinkOutcome::Linked
        }
        Ok(_) => {
            return Err(PersistError::Layout {
                path: dir.to_path_buf(),
                problem: "is a regular file where a directory should be".into(),
                fix: "move it away; cfy-init links this path into the store".into(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                super::state::ensure_real_dir(parent, 0o755)?;
            }
            replace_with_symlink(dir, copy)?;
            LinkOutcome::Created
        }
        Err(e) => return Err(PersistError::io(dir, "cannot inspect", e)),
    };
    // A crash between removing the image directory and dropping the marker of an overlay
    // move leaves the marker behind; `dir` is a link now, so it has no meaning any more.
    let marker = sibling(&initial, ".cfy-moved");
    if fs::symlink_metadata(&marker).is_ok() {
        fs::remove_file(&marker)
            .map_err(|e| PersistError::io(&marker, "cannot remove marker", e))?;
    }
    Ok((outcome, notes))
}

/// Move the image directory `dir` to `initial` and link `dir` to `copy`. A rename when the
/// file system allows it; on overlayfs (Docker's overlay2, containerd) a directory of a
/// lower image layer cannot be renamed (EXDEV), so it is copied and then removed instead.
fn move_to_initial(dir: &Path, initial: &Path, copy: &Path) -> Result<(), PersistError> {
    match fs::rename(dir, initial) {
        Ok(()) => {
            sync_parent(dir)?;
            fault::point("moved to -initial");
            replace_with_symlink(dir, copy)
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => copy_to_initial(dir, initial, copy),
        Err(e) => Err(PersistError::io(
            dir,
            "cannot move the image directory to -initial",
            e,
        )),
    }
}

/// The EXDEV fallback, crash-safe: copy `dir` to a staging sibling, write the commit marker,
/// rename the copy to `initial`, then remove `dir` and link it. Before the marker exists a
/// crash leaves only staging, redone next boot; after it, the next boot finishes the move
/// ([`finish_committed_move`]) instead of refusing a real `dir` beside `initial`.
fn copy_to_initial(dir: &Path, initial: &Path, copy: &Path) -> Result<(), PersistError> {
    let staging = sibling(initial, ".cfy-partial");
    if fs::symlink_metadata(&staging).is_ok() {
        super::state::remove_any(&staging)
            .map_err(|e| PersistError::io(&staging, "cannot remove an unfinished copy", e))?;
    }
    let opts = super::copy::CopyOptions {
        workers: 2,
        progress_interval: std::time::Duration::from_secs(5),
        label: format!("{} -> {}", dir.display(), initial.display()),
    };
    super::copy::copy(&[(dir.to_path_buf(), staging.clone())], &opts)?;
    super::copy::sync_filesystem(&staging)
        .map_err(|e| PersistError::io(&staging, "cannot sync the copy", e))?;
    fault::point("-initial copied");
    let marker = sibling(initial, ".cfy-moved");
    fs::write(&marker, b"")
        .and_then(|()| fs::rename(&staging, initial))
        .map_err(|e| PersistError::io(initial, "cannot put the image copy in place", e))?;
    sync_parent(dir)?;
    fault::point("-initial in place");
    tracing::info!(dir = %dir.display(), "image directory copied to -initial (overlay file system)");
    finish_committed_move(dir, initial, copy)
}

/// True when `initial` is the complete copy of a real `dir` that is still to be removed.
fn move_was_committed(initial: &Path) -> bool {
    fs::symlink_metadata(sibling(initial, ".cfy-moved")).is_ok()
        && fs::symlink_metadata(initial).is_ok_and(|m| m.is_dir())
}

/// Remove the image directory whose copy is safely in `initial`, link it, drop the marker.
fn finish_committed_move(dir: &Path, initial: &Path, copy: &Path) -> Result<(), PersistError> {
    fs::remove_dir_all(dir)
        .map_err(|e| PersistError::io(dir, "cannot remove the image directory", e))?;
    sync_parent(dir)?;
    fault::point("image directory removed");
    replace_with_symlink(dir, copy)?;
    let marker = sibling(initial, ".cfy-moved");
    fs::remove_file(&marker).map_err(|e| PersistError::io(&marker, "cannot remove marker", e))?;
    sync_parent(dir)
}

/// `.<name><suffix>` next to `path`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(suffix);
    path.with_file_name(name)
}

/// Put a symlink `dir -> target` in place atomically: create it under a temporary name,
/// rename it over `dir`, fsync the parent.
fn replace_with_symlink(dir: &Path, target: &Path) -> Result<(), PersistError> {
    let mut tmp_name = OsString::from(".");
    tmp_name.push(dir.file_name().unwrap_or_default());
    tmp_name.push(".cfy-link");
    let tmp = dir.with_file_name(tmp_name);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(PersistError::io(
                &tmp,
                "cannot remove stale temporary link",
                e,
            ))
        }
        _ => {}
    }
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(|e| PersistError::io(&tmp, "cannot create link", e))?;
    fault::point("temporary link created");
    fs::rename(&tmp, dir).map_err(|e| PersistError::io(dir, "cannot put the link in place", e))?;
    sync_parent(dir)?;
    fault::point("link in place");
    Ok(())
}

fn sync_parent(path: &Path) -> Result<(), PersistError> {
    let parent = fsutil::parent_of(path);
    fsutil::fsync_dir(parent).map_err(|e| PersistError::io(parent, "cannot sync", e))
}

/// The legacy script, on a container restart, moved the symlink `dir` into an existing
/// `dir-initial`, leaving `dir-initial/<name>` pointing at the store. Remove exactly that
/// link (never anything else), so `-initial` is the pristine image copy again.
fn remove_legacy_stray_link(
    dir: &Path,
    initial: &Path,
    copy: &Path,
    legacy_target: &Path,
) -> Result<Option<String>, PersistError> {
    if !fs::symlink_metadata(initial).is_ok_and(|m| m.is_dir()) {
        return Ok(None);
    }
    let stray = initial.join(dir.file_name().unwrap_or_default());
    let Ok(m) = fs::symlink_metadata(&stray) else {
        return Ok(None);
    };
    if !m.file_type().is_symlink() {
        return Ok(None);
    }
    let target =
        fs::read_link(&stray).map_err(|e| PersistError::io(&stray, "cannot read link", e))?;
    // Path equality compares components, so `/cfy-persist//var/lib` matches here.
    if target != copy && target != legacy_target {
        return Ok(None);
    }
    fs::remove_file(&stray)
        .map_err(|e| PersistError::io(&stray, "cannot remove legacy stray link", e))?;
    sync_parent(&stray)?;
    tracing::info!(link = %stray.display(), "removed the stray link the legacy restart bug left");
    Ok(Some(format!(
        "removed legacy stray link {}",
        stray.display()
    )))
}

/// Bind-mount `copy` onto `dir` unless it is there already.
fn bind(dir: &Path, copy: &Path) -> Result<LinkOutcome, PersistError> {
    let copy_meta = fs::metadata(copy)
        .map_err(|e| PersistError::io(copy, "cannot inspect the store copy", e))?;
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            if m.dev() == copy_meta.dev() && m.ino() == copy_meta.ino() {
                return Ok(LinkOutcome::AlreadyMounted);
            }
        }
        Ok(m) if m.file_type().is_symlink() => {
            return Err(PersistError::Layout {
                path: dir.to_path_buf(),
                problem: "is a symlink but persist.link is bind".into(),
                fix: "remove the symlink (its target is kept) or set persist.link: symlink".into(),
            })
        }
        Ok(_) => {
            return Err(PersistError::Layout {
                path: dir.to_path_buf(),
                problem: "is a regular file where a directory should be".into(),
                fix: "move it away; cfy-init mounts the store copy on this path".into(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            super::state::ensure_real_dir(dir, 0o755)?;
        }
        Err(e) => return Err(PersistError::io(dir, "cannot inspect", e)),
    }
    use nix::mount::{mount, MsFlags};
    match mount(Some(copy), dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>) {
        Ok(()) => Ok(LinkOutcome::Mounted),
        Err(nix::errno::Errno::EPERM) => Err(PersistError::Layout {
            path: dir.to_path_buf(),
            problem: "cannot bind-mount the store copy: permission denied".into(),
            fix: "persist.link: bind needs CAP_SYS_ADMIN (run privileged or add the capability), or set persist.link: symlink".into(),
        }),
        Err(e) => Err(PersistError::io(dir, "cannot bind-mount the store copy", io::Error::from(e))),
    }
}
