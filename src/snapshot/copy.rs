//! The paused part of a snapshot: a copy of the store tree into a staging directory on the
//! same file system, by reflink (FICLONE) where the file system can, else by a kernel copy.
//! Owners, modes, mtimes and xattrs are kept; links are copied as links, never followed;
//! hard links stay hard links, FIFOs are made again, holes stay holes.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
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
    let mut links = Links::default();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (rx, shared) = (rx.clone(), &shared);
            s.spawn(move || copy_files(&rx, shared));
        }
        drop(rx);
        if let Err(e) = walk(src, dst, true, &tx, &shared, &mut dirs, &mut links) {
            shared.fail(e);
        }
        drop(tx);
    });
    if let Some(e) = shared.error.into_inner().unwrap() {
        return Err(e);
    }
    // Further names of multiply linked files, once the first is copied.
    for (first, to) in &links.later {
        fs::hard_link(first, to).map_err(|e| SnapshotError::io(to, e))?;
    }
    // Directory metadata last: creating the files inside changed the mtimes, and a
    // read-only mode must not stop the workers from creating them.
    for (to, meta) in dirs.iter().rev() {
        apply_meta(to, meta)?;
    }
    for (to, _) in dirs.iter().rev() {
        let from = src.join(to.strip_prefix(dst).unwrap_or(to));
        copy_xattrs(&from, to)?;
    }
    let meta = fs::symlink_metadata(src).map_err(|e| SnapshotError::io(src, e))?;
    apply_meta(dst, &meta)?;
    Ok(shared.all_reflinked.into_inner())
}

/// Multiply linked files: the copy of each inode's first name, and the names to link.
#[derive(Default)]
struct Links {
    first: std::collections::HashMap<(u64, u64), PathBuf>,
    later: Vec<(PathBuf, PathBuf)>,
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
        let done = copy_file(&job.from, &job.to, &job.meta).and_then(|reflinked| {
            apply_meta(&job.to, &job.meta)?;
            copy_xattrs(&job.from, &job.to)?;
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
    links: &mut Links,
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
            walk(&from, &to, false, tx, shared, dirs, links)?;
            dirs.push((to, meta));
        } else if ft.is_file() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.first.get(&key) {
                links.later.push((first.clone(), to));
            } else {
                links.first.insert(key, to.clone());
                let _ = tx.send(FileJob { from, to, meta });
            }
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
            copy_xattrs(&from, &to)?;
        } else if ft.is_fifo() {
            nix::unistd::mkfifo(&to, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| SnapshotError::io(&to, e.into()))?;
            apply_meta(&to, &meta)?;
            copy_xattrs(&from, &to)?;
        } else if ft.is_socket() {
            tracing::info!(path = %from.display(), "snapshot: socket left out (a runtime object)");
        } else {
            return Err(SnapshotError::Other(format!(
                "{}: device node in the store: not data, and restore refuses it; remove it",
                from.display()
            )));
        }
    }
    Ok(())
}

/// Reflink `from` to the new file `to`; fall back to a kernel copy. True when reflinked.
fn copy_file(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<bool, SnapshotError> {
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
    if meta.blocks().saturating_mul(512) < meta.len() {
        copy_sparse(&src, &dst, meta.len()).map_err(|e| SnapshotError::io(to, e))?;
        return Ok(false);
    }
    drop(dst);
    // std::fs::copy uses copy_file_range, which stays in the kernel.
    fs::copy(from, to).map_err(|e| SnapshotError::io(to, e))?;
    Ok(false)
}

/// Copy the data segments of a file with holes (SEEK_DATA/SEEK_HOLE), leaving the holes.
fn copy_sparse(src: &File, dst: &File, len: u64) -> io::Result<()> {
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: plain syscalls on open fds.
        let data = unsafe { libc::lseek(s, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole is left
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(s, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let (mut off_in, mut off_out) = (data, data);
        while off_in < hole {
            // SAFETY: offsets are valid pointers to i64 for the call's duration.
            let n = unsafe {
                libc::copy_file_range(s, &mut off_in, d, &mut off_out, (hole - off_in) as usize, 0)
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
        }
        pos = hole;
    }
    dst.set_len(len)
}

/// Copy the extended attributes (ACLs included) of `from` itself to `to` itself, after
/// its owner and mode (a chown clears file capabilities). One the destination cannot hold
/// is left out with a warning.
fn copy_xattrs(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    let names = match xattr::list(from) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(SnapshotError::io(from, e)),
    };
    for name in names {
        let Some(value) = xattr::get(from, &name).map_err(|e| SnapshotError::io(from, e))? else {
            continue;
        };
        match xattr::set(to, &name, &value) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
                tracing::warn!(path = %to.display(), error = %e, "an extended attribute was left out")
            }
            Err(e) => return Err(SnapshotError::io(to, e)),
        }
    }
    Ok(())
}

fn apply_meta(path: &Path, meta: &fs::Metadata) -> Result<(), SnapshotError> {
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| SnapshotError::io(path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| SnapshotError::io(path, e))?;
    // By path without opening (set_file_mtime opens, which blocks on a FIFO).
    let mtime = filetime::FileTime::from_last_modification_time(meta);
    filetime::set_symlink_file_times(path, mtime, mtime).map_err(|e| SnapshotError::io(path, e))
}

/// Remove a staging tree, ignoring a missing one.
pub fn remove_tree(path: &Path) {
    match fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove staging"),
    }
}

/// What a copy of the store `src` takes on disk where nothing is reflinked: the bytes of
/// the blocks its entries hold and the inodes (multiply linked files once; top-level
/// reserved names skipped). The copy keeps holes, so this is what it allocates, give or
/// take a directory block.
pub fn tree_usage(src: &Path) -> Usage {
    fn walk(
        dir: &Path,
        top: bool,
        seen: &mut std::collections::HashSet<(u64, u64)>,
        u: &mut Usage,
    ) {
        for item in fs::read_dir(dir).into_iter().flatten().flatten() {
            if top && is_reserved(&item.file_name()) {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(item.path()) else {
                continue;
            };
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            u.bytes += meta.blocks() * 512;
            u.inodes += 1;
            if meta.is_dir() {
                walk(&item.path(), false, seen, u);
            }
        }
    }
    let mut usage = Usage::default();
    walk(src, true, &mut Default::default(), &mut usage);
    usage
}

/// Room a tree takes: bytes of allocated blocks, and inodes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}
