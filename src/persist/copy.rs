//! The copy engine: copies trees keeping owner, group, mode, timestamps (directories and
//! symlinks included), symlinks (never followed), hard links, xattrs (ACLs are xattrs),
//! sparse files, FIFOs and device nodes; sockets are skipped with a note.
//!
//! Written by hand because no crate does this whole set: fs_extra / cp-like crates follow
//! symlinks or drop hard links, xattrs and holes. Speed comes from parallel workers (a shared
//! queue of directories and batches of files), reflink (FICLONE) where the file system can,
//! `copy_file_range` otherwise (in-kernel copy, no user-space buffers), and early writeback
//! of large files. Durability is not this module's job: the caller syncs the whole file
//! system once (`syncfs`) before renaming the copy into place, which is far cheaper than an
//! fsync per file and gives the same guarantee.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use filetime::FileTime;

use super::fault;

/// Bytes of file data at which a directory's files are split into a separate job. Small
/// files stay with the worker that listed their directory: creating files in one directory
/// from several threads makes them contend for its lock and burns CPU spinning on it.
const BATCH_BYTES: u64 = 32 << 20;
/// Files at least this large get their writeback started right after the copy.
const EARLY_WRITEBACK: u64 = 1 << 20;
/// At most this many notes of one kind are kept (the rest are counted).
const MAX_NOTES: usize = 20;

/// How a copy runs.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub workers: usize,
    pub progress_interval: Duration,
    /// What the progress lines call the copy (e.g. `/var/lib`).
    pub label: String,
}

/// What a copy did.
#[derive(Debug, Clone, Default)]
pub struct CopyOutcome {
    pub files: u64,
    pub bytes: u64,
    pub dirs: u64,
    pub notes: Vec<String>,
}

/// A failed copy: the path, the operation and the OS error.
#[derive(Debug)]
pub struct CopyError {
    pub path: PathBuf,
    pub what: &'static str,
    pub source: io::Error,
}

impl From<CopyError> for super::PersistError {
    fn from(e: CopyError) -> Self {
        super::PersistError::io(&e.path, e.what, e.source)
    }
}

type CopyResult<T> = Result<T, CopyError>;

fn at<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> CopyError + 'a {
    move |source| CopyError {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// Index of the group (one tree of the caller's, e.g. one image directory) a job belongs to.
type Group = usize;

enum Job {
    Dir {
        src: PathBuf,
        dst: PathBuf,
        group: Group,
    },
    Files(Group, Vec<(PathBuf, PathBuf, Metadata)>),
}

/// What one group's copy did so far.
#[derive(Default)]
struct GroupStats {
    files: AtomicU64,
    bytes: AtomicU64,
    dirs: AtomicU64,
    notes: Mutex<Vec<String>>,
    notes_dropped: AtomicU64,
    xattr_warned: AtomicBool,
}

struct Engine {
    tx: Sender<Job>,
    rx: Receiver<Job>,
    /// Jobs queued or running; the copy is done when it drops to 0.
    pending: AtomicUsize,
    abort: AtomicBool,
    error: Mutex<Option<CopyError>>,
    groups: Vec<GroupStats>,
    dirs: Mutex<Vec<(PathBuf, PathBuf, Metadata, Group)>>,
    /// First copy of each multiply-linked inode (per group: hard links are kept within
    /// a group, as a copy of each tree on its own would), and the links to make once all
    /// is copied.
    inodes: Mutex<HashMap<(Group, u64, u64), PathBuf>>,
    links: Mutex<Vec<(PathBuf, PathBuf, Group)>>,
    reflink: AtomicBool,
    copy_range: AtomicBool,
    /// Files are created with their final mode when the umask keeps it (see
    /// [`Engine::create_mode`]); false when the umask is unknown or the staging
    /// directories inherit a default ACL, which would override it.
    exact_create: bool,
    umask: u32,
}

/// A directory being listed, its source and its copy open, so that the entries in it are
/// opened and created by name (`openat`, `mkdirat`): a full path would be walked again,
/// component by component, for every file.
struct DirFds {
    src: OwnedFd,
    dst: OwnedFd,
}

/// Copy each `(src, dst)` pair; `dst` must not exist, its parent must. `src` may be any
/// kind of entry; it is never followed when it is a symlink.
pub fn copy(pairs: &[(PathBuf, PathBuf)], opts: &CopyOptions) -> CopyResult<CopyOutcome> {
    let mut outs = copy_groups(&[pairs], opts)?;
    Ok(outs.pop().expect("one group"))
}

/// Copy several groups of pairs (as [`copy`] each) with one pool of workers, and say what
/// each group's copy did. One pool instead of one per group: a pool's last jobs leave
/// workers idle while they run down, and the next group would wait for them.
pub fn copy_groups(
    groups: &[&[(PathBuf, PathBuf)]],
    opts: &CopyOptions,
) -> CopyResult<Vec<CopyOutcome>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let umask = process_umask();
    let mut engine = Engine {
        tx,
        rx,
        pending: AtomicUsize::new(0),
        abort: AtomicBool::new(false),
        error: Mutex::new(None),
        groups: groups.iter().map(|_| GroupStats::default()).collect(),
        dirs: Mutex::new(Vec::new()),
        inodes: Mutex::new(HashMap::new()),
        links: Mutex::new(Vec::new()),
        reflink: AtomicBool::new(true),
        copy_range: AtomicBool::new(true),
        exact_create: umask.is_some(),
        umask: umask.unwrap_or(0o777),
    };
    for (group, pairs) in groups.iter().enumerate() {
        for (src, dst) in pairs.iter() {
            let meta = fs::symlink_metadata(src).map_err(at(src, "cannot read image entry"))?;
            if meta.is_dir() {
                engine.make_dir(src, dst, meta, group, None)?;
                if has_default_acl(dst) {
                    engine.exact_create = false;
                }
            } else {
                engine.push(Job::Files(group, vec![(src.clone(), dst.clone(), meta)]));
            }
        }
    }
    engine.run_workers(opts);
    if let Some(e) = engine.error.lock().expect("error lock").take() {
        return Err(e);
    }
    engine.finish_links()?;
    engine.finish_dirs()?;
    Ok(engine.groups.into_iter().map(GroupStats::outcome).collect())
}

impl GroupStats {
    fn outcome(self) -> CopyOutcome {
        let mut notes = self.notes.into_inner().expect("notes lock");
        let dropped = self.notes_dropped.into_inner();
        if dropped > 0 {
            notes.push(format!("{dropped} more notes not shown"));
        }
        CopyOutcome {
            files: self.files.into_inner(),
            bytes: self.bytes.into_inner(),
            dirs: self.dirs.into_inner(),
            notes,
        }
    }
}

impl Engine {
    fn push(&self, job: Job) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.tx.send(job).expect("the engine holds the receiver");
    }

    fn run_workers(&self, opts: &CopyOptions) {
        // A cold-cache copy mostly waits on reads of inodes, directories and small
        // files; many threads per CPU keep the disk's queue full while others wait.
        // Measured on 2 CPUs (benches/seed.sh): 16 threads copy ~10% faster than 4;
        // more than that gains nothing, the kernel's CPU time then bounds the copy.
        let workers = if opts.workers == 0 {
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            (cpus * 8).clamp(8, 64)
        } else {
            opts.workers
        };
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        std::thread::scope(|s| {
            s.spawn(|| self.log_progress(opts, done_rx));
            let handles: Vec<_> = (0..workers).map(|_| s.spawn(|| self.work())).collect();
            for h in handles {
                let _ = h.join();
            }
            drop(done_tx);
        });
    }

    fn work(&self) {
        loop {
            if self.abort.load(Ordering::SeqCst) {
                return;
            }
            match self.rx.recv_timeout(Duration::from_millis(5)) {
                Ok(job) => {
                    if let Err(e) = self.run_job(job) {
                        self.fail(e);
                    }
                    self.pending.fetch_sub(1, Ordering::SeqCst);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.pending.load(Ordering::SeqCst) == 0 {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn fail(&self, e: CopyError) {
        self.abort.store(true, Ordering::SeqCst);
        let mut slot = self.error.lock().expect("error lock");
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn log_progress(&self, opts: &CopyOptions, done: Receiver<()>) {
        let start = Instant::now();
        while let Err(RecvTimeoutError::Timeout) = done.recv_timeout(opts.progress_interval) {
            let sum = |f: fn(&GroupStats) -> &AtomicU64| -> u64 {
                self.groups
                    .iter()
                    .map(|g| f(g).load(Ordering::Relaxed))
                    .sum()
            };
            let files = sum(|g| &g.files);
            let bytes = sum(|g| &g.bytes);
            let secs = start.elapsed().as_secs_f64().max(0.001);
            tracing::info!(
                dir = %opts.label,
                files,
                mbytes = bytes / 1_000_000,
                mb_per_s = (bytes as f64 / 1e5 / secs).round() / 10.0,
                files_per_s = (files as f64 / secs).round() as u64,
                "copy in progress"
            );
        }
    }

    fn note(&self, group: Group, text: String) {
        let g = &self.groups[group];
        let mut notes = g.notes.lock().expect("notes lock");
        if notes.len() < MAX_NOTES {
            tracing::info!("{text}");
            notes.push(text);
        } else {
            g.notes_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn run_job(&self, job: Job) -> CopyResult<()> {
        match job {
            Job::Dir { src, dst, group } => self.copy_dir_entries(&src, &dst, group),
            Job::Files(group, batch) => {
                for (src, dst, meta) in batch {
                    if self.abort.load(Ordering::Relaxed) {
                        break;
                    }
                    self.copy_entry(&src, &dst, &meta, group, None)?;
                }
                Ok(())
            }
        }
    }

    /// Create `dst` (private until its metadata is applied at the end) and queue its
    /// contents.
    fn make_dir(
        &self,
        src: &Path,
        dst: &Path,
        meta: Metadata,
        group: Group,
        at_dir: Option<(&DirFds, &CStr)>,
    ) -> CopyResult<()> {
        match at_dir {
            // SAFETY: an open directory fd and a NUL-terminated name.
            Some((fds, name)) => {
                cvt(unsafe { libc::mkdirat(fds.dst.as_raw_fd(), name.as_ptr(), 0o700) })
            }
            None => fs::DirBuilder::new().mode(0o700).create(dst),
        }
        .map_err(at(dst, "cannot create directory"))?;
        fault::point("dir created");
        self.dirs.lock().expect("dirs lock").push((
            src.to_path_buf(),
            dst.to_path_buf(),
            meta,
            group,
        ));
        self.push(Job::Dir {
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
            group,
        });
        Ok(())
    }

    /// List one directory: subdirectories become jobs, files are copied right here (big
    /// ones go out as separate jobs, see [`BATCH_BYTES`]).
    fn copy_dir_entries(&self, src: &Path, dst: &Path, group: Group) -> CopyResult<()> {
        let entries = fs::read_dir(src).map_err(at(src, "cannot read image directory"))?;
        let fds = DirFds {
            src: open_dir(src).map_err(at(src, "cannot read image directory"))?,
            dst: open_dir(dst).map_err(at(dst, "cannot open directory"))?,
        };
        let mut batch: Vec<(PathBuf, PathBuf, Metadata, CString)> = Vec::new();
        let mut batch_bytes = 0;
        for entry in entries {
            let entry = entry.map_err(at(src, "cannot read image directory"))?;
            let name: OsString = entry.file_name();
            let s = src.join(&name);
            // DirEntry::metadata is an lstat relative to the open directory.
            let meta = entry
                .metadata()
                .map_err(at(&s, "cannot stat image entry"))?;
            let d = dst.join(&name);
            // A name read from a directory holds no NUL.
            let cname = CString::new(name.as_bytes()).expect("no NUL in a file name");
            if meta.is_dir() {
                self.make_dir(&s, &d, meta, group, Some((&fds, &cname)))?;
                continue;
            }
            batch_bytes += meta.len();
            batch.push((s, d, meta, cname));
            if batch_bytes >= BATCH_BYTES {
                let job = std::mem::take(&mut batch)
                    .into_iter()
                    .map(|(s, d, meta, _)| (s, d, meta))
                    .collect();
                self.push(Job::Files(group, job));
                batch_bytes = 0;
            }
        }
        for (s, d, meta, cname) in batch {
            self.copy_entry(&s, &d, &meta, group, Some((&fds, &cname)))?;
        }
        Ok(())
    }

    /// Copy one non-directory entry.
    fn copy_entry(
        &self,
        src: &Path,
        dst: &Path,
        meta: &Metadata,
        group: Group,
        at_dir: Option<(&DirFds, &CStr)>,
    ) -> CopyResult<()> {
        let ft = meta.file_type();
        if ft.is_socket() {
            self.note(
                group,
                format!(
                    "{}: socket skipped (sockets are recreated by their servers)",
                    src.display()
                ),
            );
            return Ok(());
        }
        if meta.nlink() > 1 {
            let mut inodes = self.inodes.lock().expect("inodes lock");
            let key = (group, meta.dev(), meta.ino());
            if let Some(first) = inodes.get(&key) {
                self.links.lock().expect("links lock").push((
                    first.clone(),
                    dst.to_path_buf(),
                    group,
                ));
                return Ok(());
            }
            inodes.insert(key, dst.to_path_buf());
        }
        if ft.is_file() {
            self.copy_file(src, dst, meta, group, at_dir)?;
        } else if ft.is_symlink() {
            copy_symlink(src, dst, meta)?;
            self.copy_xattrs(src, dst, None, group)?;
            set_times(dst, meta)?;
        } else {
            make_node(dst, meta)?;
            set_owner_mode(dst, meta)?;
            self.copy_xattrs(src, dst, None, group)?;
            set_times(dst, meta)?;
        }
        self.groups[group].files.fetch_add(1, Ordering::Relaxed);
        fault::point("entry copied");
        Ok(())
    }

    fn copy_file(
        &self,
        src: &Path,
        dst: &Path,
        meta: &Metadata,
        group: Group,
        at_dir: Option<(&DirFds, &CStr)>,
    ) -> CopyResult<()> {
        let final_mode = self.create_mode(meta);
        let create_mode = final_mode.unwrap_or(0o600);
        let (src_at, dst_at) = match at_dir {
            Some((fds, name)) => (Some((&fds.src, name)), Some((&fds.dst, name))),
            None => (None, None),
        };
        let input = open_source(src, src_at)?;
        let output =
            create_file(dst, dst_at, create_mode).map_err(at(dst, "cannot create file"))?;
        let size = meta.len();
        if size > 0 && !self.try_reflink(&input, &output) {
            let sparse = (meta.blocks() * 512) < size;
            if sparse {
                self.copy_data_extents(&input, &output, size)
                    .map_err(at(dst, "cannot copy file data"))?;
            } else {
                self.copy_range(&input, &output, 0, size)
                    .map_err(at(dst, "cannot copy file data"))?;
            }
        }
        std::os::unix::fs::fchown(&output, Some(meta.uid()), Some(meta.gid()))
            .map_err(at(dst, "cannot set owner"))?;
        if final_mode.is_none() {
            output
                .set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(at(dst, "cannot set mode"))?;
        }
        self.copy_xattrs(src, dst, Some((&input, &output)), group)?;
        filetime::set_file_handle_times(
            &output,
            Some(FileTime::from_last_access_time(meta)),
            Some(FileTime::from_last_modification_time(meta)),
        )
        .map_err(at(dst, "cannot set times"))?;
        if size >= EARLY_WRITEBACK {
            // Start writeback now so the final syncfs has little left to wait for.
            // SAFETY: plain syscall on an open fd.
            unsafe {
                libc::sync_file_range(output.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        self.groups[group].bytes.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    /// The mode to create a copy of `meta` with, when it comes out exactly right and needs
    /// no fchmod: the umask leaves it as it is, and it has no set-id or sticky bit (the
    /// fchown that follows clears set-id bits, so those are set after it). The file stays
    /// private all the same: its directory is 0700 until the copy is complete.
    fn create_mode(&self, meta: &Metadata) -> Option<u32> {
        let mode = meta.mode() & 0o7777;
        (self.exact_create && mode & 0o7000 == 0 && mode & self.umask == 0).then_some(mode)
    }

    /// Clone the whole file (btrfs, XFS with reflink, ...). False when the file system
    /// cannot; then it is not tried again.
    fn try_reflink(&self, input: &File, output: &File) -> bool {
        if !self.reflink.load(Ordering::Relaxed) {
            return false;
        }
        // SAFETY: FICLONE takes the source fd as its argument.
        let r = unsafe { libc::ioctl(output.as_raw_fd(), libc::FICLONE, input.as_raw_fd()) };
        if r == 0 {
            return true;
        }
        self.reflink.store(false, Ordering::Relaxed);
        false
    }

    /// Copy only the data extents of a sparse file (SEEK_DATA / SEEK_HOLE), then set its
    /// length so a trailing hole stays a hole.
    fn copy_data_extents(&self, input: &File, output: &File, size: u64) -> io::Result<()> {
        let fd = input.as_raw_fd();
        let mut offset: i64 = 0;
        loop {
            // SAFETY: lseek on an open fd.
            let data = unsafe { libc::lseek(fd, offset, libc::SEEK_DATA) };
            if data < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENXIO) {
                    break;
                }
                return Err(e);
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            if hole < 0 {
                return Err(io::Error::last_os_error());
            }
            self.copy_range(input, output, data as u64, (hole - data) as u64)?;
            offset = hole;
        }
        output.set_len(size)
    }

    /// Copy `len` bytes at `offset` (same offset in both files); stops early at EOF.
    fn copy_range(&self, input: &File, output: &File, offset: u64, len: u64) -> io::Result<()> {
        let mut off_in = offset as i64;
        let mut off_out = offset as i64;
        let end = offset + len;
        while self.copy_range.load(Ordering::Relaxed) && (off_in as u64) < end {
            let want = (end - off_in as u64).min(1 << 30) as usize;
            // SAFETY: valid fds and offset pointers for the duration of the call.
            let n = unsafe {
                libc::copy_file_range(
                    input.as_raw_fd(),
                    &mut off_in,
                    output.as_raw_fd(),
                    &mut off_out,
                    want,
                    0,
                )
            };
            if n == 0 {
                return Ok(());
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                        self.copy_range.store(false, Ordering::Relaxed);
                    }
                    Some(libc::EINTR) => {}
                    _ => return Err(e),
                }
            }
        }
        copy_by_read_write(input, output, off_in as u64, end)
    }

    /// Copy every xattr of `src` onto `dst` (through the open files when given, which
    /// saves path lookups). A store file system without xattr support gets one note, not
    /// an error.
    fn copy_xattrs(
        &self,
        src: &Path,
        dst: &Path,
        files: Option<(&File, &File)>,
        group: Group,
    ) -> CopyResult<()> {
        use xattr::FileExt as _;
        let listed = match files {
            Some((input, _)) => input.list_xattr(),
            None => xattr::list(src),
        };
        let names = match listed {
            Ok(n) => n,
            Err(e) if unsupported(&e) => return Ok(()),
            Err(e) => return Err(at(src, "cannot list xattrs")(e)),
        };
        for name in names {
            let value = match files {
                Some((input, _)) => input.get_xattr(&name),
                None => xattr::get(src, &name),
            };
            let Some(value) = value.map_err(at(src, "cannot read xattr"))? else {
                continue;
            };
            let set = match files {
                Some((_, output)) => output.set_xattr(&name, &value),
                None => xattr::set(dst, &name, &value),
            };
            match set {
                Ok(()) => {}
                Err(e) if unsupported(&e) => {
                    if !self.groups[group]
                        .xattr_warned
                        .swap(true, Ordering::Relaxed)
                    {
                        self.note(group, format!(
                            "{}: the store's file system does not support xattr {}; xattrs not kept",
                            dst.display(),
                            name.to_string_lossy()
                        ));
                    }
                }
                Err(e) => return Err(at(dst, "cannot set xattr")(e)),
            }
        }
        Ok(())
    }

    fn finish_links(&self) -> CopyResult<()> {
        let links = std::mem::take(&mut *self.links.lock().expect("links lock"));
        for (first, dst, group) in links {
            fs::hard_link(&first, &dst).map_err(at(&dst, "cannot create hard link"))?;
            self.groups[group].files.fetch_add(1, Ordering::Relaxed);
            fault::point("hard link");
        }
        Ok(())
    }

    /// Apply directory metadata deepest first, so that creating children does not touch
    /// a directory's times after they were set.
    fn finish_dirs(&self) -> CopyResult<()> {
        let mut dirs = std::mem::take(&mut *self.dirs.lock().expect("dirs lock"));
        dirs.sort_by_key(|(_, dst, _, _)| std::cmp::Reverse(dst.components().count()));
        for (src, dst, meta, group) in &dirs {
            set_owner_mode(dst, meta)?;
            self.copy_xattrs(src, dst, None, *group)?;
            set_times(dst, meta)?;
            self.groups[*group].dirs.fetch_add(1, Ordering::Relaxed);
            fault::point("dir finished");
        }
        Ok(())
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
}

fn cvt(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An fd on a directory, for the `*at` calls on the entries in it.
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)?;
    Ok(f.into())
}

fn openat(dir: &OwnedFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<File> {
    // SAFETY: an open directory fd and a NUL-terminated name; on success the new fd is
    // owned by nothing else.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The process's umask, from /proc (reading it with umask(2) would change it).
fn process_umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// Whether new entries in `dir` get a default ACL, which decides their mode instead of
/// the umask.
fn has_default_acl(dir: &Path) -> bool {
    xattr::get(dir, "system.posix_acl_default").is_ok_and(|v| v.is_some())
}

/// A directory fd and an entry's name in it: the entry is opened by name (`openat`) rather
/// than by its full path.
type AtDir<'a> = Option<(&'a OwnedFd, &'a CStr)>;

/// Open the image file `src` (by name in its open directory when given) for reading,
/// never following a link.
fn open_source(src: &Path, at_dir: AtDir) -> CopyResult<File> {
    // O_NOATIME keeps the image's access times as they were; only the owner or root may
    // use it, so fall back without it.
    let open = |flags| match at_dir {
        Some((dir, name)) => openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW | flags, 0),
        None => OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | flags)
            .open(src),
    };
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        r => r,
    }
    .map_err(at(src, "cannot read image file"))
}

/// Create the new file `dst` (by name in its open directory when given) with `mode`.
fn create_file(dst: &Path, at_dir: AtDir, mode: u32) -> io::Result<File> {
    match at_dir {
        Some((dir, name)) => openat(
            dir,
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            mode,
        ),
        None => OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(dst),
    }
}

fn copy_by_read_write(input: &File, output: &File, mut offset: u64, end: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; (end.saturating_sub(offset)).min(1 << 20) as usize];
    while offset < end {
        let want = (end - offset).min(buf.len() as u64) as usize;
        let n = input.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            break;
        }
        output.write_all_at(&buf[..n], offset)?;
        offset += n as u64;
    }
    Ok(())
}

fn copy_symlink(src: &Path, dst: &Path, meta: &Metadata) -> CopyResult<()> {
    let target = fs::read_link(src).map_err(at(src, "cannot read symlink"))?;
    std::os::unix::fs::symlink(&target, dst).map_err(at(dst, "cannot create symlink"))?;
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .map_err(at(dst, "cannot set owner"))
}

fn make_node(dst: &Path, meta: &Metadata) -> CopyResult<()> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dst.as_os_str()))
        .map_err(|_| at(dst, "path contains NUL")(io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: valid C string; mode carries the file type (FIFO, char, block).
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            meta.mode() as libc::mode_t,
            meta.rdev() as libc::dev_t,
        )
    };
    if r != 0 {
        return Err(at(dst, "cannot create special file")(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn set_owner_mode(dst: &Path, meta: &Metadata) -> CopyResult<()> {
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .map_err(at(dst, "cannot set owner"))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(at(dst, "cannot set mode"))
}

fn set_times(dst: &Path, meta: &Metadata) -> CopyResult<()> {
    filetime::set_symlink_file_times(
        dst,
        FileTime::from_last_access_time(meta),
        FileTime::from_last_modification_time(meta),
    )
    .map_err(at(dst, "cannot set times"))
}

/// Make everything written on the file system holding `path` durable (one `syncfs`
/// instead of an fsync per file; returns writeback errors since Linux 5.8).
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    // SAFETY: syncfs on an open fd.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Rename `from` to `to` only if `to` does not exist (RENAME_NOREPLACE). Ok(false) when
/// `to` exists.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let f = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let t = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: valid C strings; AT_FDCWD with absolute or cwd-relative paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        Ok(false)
    } else {
        Err(e)
    }
}
