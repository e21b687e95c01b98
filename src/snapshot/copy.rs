//! The paused part of a snapshot: a copy of the store tree into a staging directory on the
//! same file system, by reflink (FICLONE) where the file system can, else by a kernel copy.
//! Owners, modes and mtimes are kept; links are copied as links, never followed.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::{is_reserved, SnapshotError};

/// Copy `src` (the store) into the new directory `dst`; top-level reserved names are
/// skipped. `bytes` counts copied file bytes. Returns whether every file was reflinked.
///
/// This runs while services are paused, so files are copied by one worker per CPU: where
/// there is no reflink the copy is kernel CPU time (page-cache allocation and memcpy), and
/// one thread would leave the other cores idle while the services wait.
pub fn copy_tree(src: &Path, dst: &Path, bytes: &AtomicU64) -> Result<bool, SnapshotError> {
    fs::create_dir(dst).map_err(|e| SnapshotError::io(dst, e))?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shared = Shared {
        bytes,
        all_reflinked: AtomicBool::new(true),
        error: Mutex::new(None),
    };
    let (tx, rx) = crossbeam_channel::bounded::<FileJob>(1024);
    let mut dirs = Vec::new();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (rx, shared) = (rx.clone(), &shared);
            s.spawn(move || copy_files(&rx, shared));
        }
        drop(rx);
        if let Err(e) = walk(src, dst, true, &tx, &shared, &mut dirs) {
            shared.fail(e);
        }
        drop(tx);
    });
    if let Some(e) = shared.error.into_inner().unwrap() {
        return Err(e);
    }
    // Directory metadata last: creating the files inside changed the mtimes, and a
    // read-only mode must not stop the workers from creating them.
    for (to, meta) in dirs.iter().rev() {
        apply_meta(to, meta)?;
    }
    let meta = fs::symlink_metadata(src).map_err(|e| SnapshotError::io(src, e))?;
    apply_meta(dst, &meta)?;
    Ok(shared.all_reflinked.into_inner())
}

/// One regular file for a copy worker.
struct FileJob {
    from: PathBuf,
    to: PathBuf,
    meta: fs::Metadata,
}

/// State the walker and the copy workers share; the first error wins and stops the rest.
struct Shared<'a> {
    bytes: &'a AtomicU64,
    all_reflinked: AtomicBool,
    error: Mutex<Option<SnapshotError>>,
}

impl Shared<'_> {
    fn fail(&self, e: SnapshotError) {
        self.error.lock().unwrap().get_or_insert(e);
    }

    fn failed(&self) -> bool {
        self.error.lock().unwrap().is_some()
    }
}

fn copy_files(rx: &crossbeam_channel::Receiver<FileJob>, shared: &Shared) {
    for job in rx {
        if shared.failed() {
            continue; // drain, so that the walker never blocks on a full queue
        }
        let done = copy_file(&job.from, &job.to).and_then(|reflinked| {
            apply_meta(&job.to, &job.meta)?;
            Ok(reflinked)
        });
        match done {
            Ok(reflinked) => {
                if !reflinked {
                    shared.all_reflinked.store(false, Ordering::Relaxed);
                }
                shared.bytes.fetch_add(job.meta.len(), Ordering::Relaxed);
            }
            Err(e) => shared.fail(e),
        }
    }
}

/// Create the directories and links of `src` under `dst` and queue its files; the
/// directories (with their metadata) are collected in creation order.
fn walk(
    src: &Path,
    dst: &Path,
    top: bool,
    tx: &crossbeam_channel::Sender<FileJob>,
    shared: &Shared,
    dirs: &mut Vec<(PathBuf, fs::Metadata)>,
) -> Result<(), SnapshotError> {
    let rd = fs::read_dir(src).map_err(|e| SnapshotError::io(src, e))?;
    for item in rd {
        if shared.failed() {
            return Ok(());
        }
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
            walk(&from, &to, false, tx, shared, dirs)?;
            dirs.push((to, meta));
        } else if ft.is_file() {
            // Fails only when every worker is gone, which they are not before the walk ends.
            let _ = tx.send(FileJob { from, to, meta });
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
