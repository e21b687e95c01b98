//! Writing the staging tree by directory file descriptors: every directory is opened one
//! name at a time from the staging root with `O_NOFOLLOW`, and every entry is made in its
//! parent's descriptor (`openat`, `mkdirat`, `symlinkat`, `linkat`, `mknodat`,
//! `fchownat`/`utimensat` with `AT_SYMLINK_NOFOLLOW`), so no symlink, whatever it points
//! at, is ever followed while an archive is extracted.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

fn cstr(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Open the directory `name` in `dir` without following a link.
fn open_dir_at(dir: RawFd, name: &str) -> io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: plain syscall; the returned fd is owned below.
    let fd = unsafe {
        libc::openat(
            dir,
            n.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    check(fd)?;
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The open directories of the staging tree along the path of the last entry (members
/// come in tree order, so this is mostly a stack of one path).
pub struct Dirs {
    root: OwnedFd,
    stack: Vec<(String, OwnedFd)>,
}

impl Dirs {
    pub fn open(root: &Path) -> io::Result<Dirs> {
        let p = CString::new(root.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: plain syscall; the returned fd is owned below.
        let fd = unsafe {
            libc::open(
                p.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        check(fd)?;
        Ok(Dirs {
            // SAFETY: fd was just opened and is owned by nobody else.
            root: unsafe { OwnedFd::from_raw_fd(fd) },
            stack: Vec::new(),
        })
    }

    /// The descriptor of the directory `rel` ("" = the root). Missing directories are made
    /// (0700) when `made` is given, and their paths added to it.
    pub fn dir(&mut self, rel: &str, mut made: Option<&mut Vec<String>>) -> io::Result<RawFd> {
        if rel.is_empty() {
            return Ok(self.root.as_raw_fd());
        }
        while let Some((top, _)) = self.stack.last() {
            if rel == top
                || rel
                    .strip_prefix(top.as_str())
                    .is_some_and(|r| r.starts_with('/'))
            {
                break;
            }
            self.stack.pop();
        }
        let done = self.stack.last().map_or(0, |(top, _)| top.len());
        if done == rel.len() {
            return Ok(self.stack.last().expect("found above").1.as_raw_fd());
        }
        let rest = rel[done..].trim_start_matches('/');
        for name in rest.split('/') {
            let cur = self
                .stack
                .last()
                .map_or(self.root.as_raw_fd(), |(_, fd)| fd.as_raw_fd());
            let path = match self.stack.last() {
                Some((top, _)) => format!("{top}/{name}"),
                None => name.to_string(),
            };
            let fd = match open_dir_at(cur, name) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound && made.is_some() => {
                    mkdir_at(cur, name)?;
                    if let Some(m) = made.as_deref_mut() {
                        m.push(path.clone());
                    }
                    open_dir_at(cur, name)?
                }
                Err(e) => return Err(e),
            };
            self.stack.push((path, fd));
        }
        Ok(self.stack.last().expect("pushed above").1.as_raw_fd())
    }

    /// Open the directory `rel` itself (for its metadata), never through a link.
    pub fn open_dir(&mut self, rel: &str) -> io::Result<File> {
        let fd = self.dir(rel, None)?;
        // SAFETY: dup of an fd we own; the duplicate is owned by the File.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        check(dup)?;
        // SAFETY: dup is a fresh fd owned by nobody else.
        Ok(unsafe { File::from_raw_fd(dup) })
    }
}

pub fn mkdir_at(dir: RawFd, name: &str) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: plain syscall.
    check(unsafe { libc::mkdirat(dir, n.as_ptr(), 0o700) })
}

/// A new file (never an existing one, never through a link), mode 0600 until its
/// metadata is applied.
pub fn create_file_at(dir: RawFd, name: &str) -> io::Result<File> {
    let n = cstr(name)?;
    // SAFETY: plain syscall; the returned fd is owned below.
    let fd = unsafe {
        libc::openat(
            dir,
            n.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    check(fd)?;
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

pub fn symlink_at(target: &str, dir: RawFd, name: &str) -> io::Result<()> {
    let (t, n) = (cstr(target)?, cstr(name)?);
    // SAFETY: plain syscall.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, n.as_ptr()) })
}

/// A hard link `name` in `dir` to `old_name` in `old_dir` (flags 0: a link itself would be
/// linked, not followed; the verifier only links to regular files).
pub fn link_at(old_dir: RawFd, old_name: &str, dir: RawFd, name: &str) -> io::Result<()> {
    let (o, n) = (cstr(old_name)?, cstr(name)?);
    // SAFETY: plain syscall.
    check(unsafe { libc::linkat(old_dir, o.as_ptr(), dir, n.as_ptr(), 0) })
}

pub fn mkfifo_at(dir: RawFd, name: &str) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: plain syscall.
    check(unsafe { libc::mknodat(dir, n.as_ptr(), libc::S_IFIFO | 0o600, 0) })
}

/// chmod of `name` in `dir`: for FIFOs only, which this module just made (Linux cannot
/// chmod without following, and a FIFO is no link).
pub fn chmod_at(dir: RawFd, name: &str, mode: u32) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: plain syscall.
    check(unsafe { libc::fchmodat(dir, n.as_ptr(), mode as libc::mode_t, 0) })
}

pub fn chown_at(dir: RawFd, name: &str, uid: u32, gid: u32) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: plain syscall.
    check(unsafe { libc::fchownat(dir, n.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
}

fn timespec(sec: u64, nsec: u32) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: sec.min(i64::MAX as u64) as libc::time_t,
        tv_nsec: nsec.min(999_999_999) as libc::c_long,
    };
    [t, t]
}

/// Set atime and mtime of `name` in `dir` itself.
pub fn set_times_at(dir: RawFd, name: &str, sec: u64, nsec: u32) -> io::Result<()> {
    let n = cstr(name)?;
    let ts = timespec(sec, nsec);
    // SAFETY: plain syscall; ts holds two timespecs.
    check(unsafe { libc::utimensat(dir, n.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// Set atime and mtime of an open file.
pub fn set_times(f: &File, sec: u64, nsec: u32) -> io::Result<()> {
    let ts = timespec(sec, nsec);
    // SAFETY: plain syscall; ts holds two timespecs.
    check(unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) })
}

pub fn set_xattr(f: &File, name: &str, value: &[u8]) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: plain syscall; value is a valid buffer of its length.
    check(unsafe {
        libc::fsetxattr(
            f.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Set an xattr of `name` in `dir` itself (a symlink: no descriptor of its own), through
/// the directory's `/proc/self/fd` entry, so no path outside the descriptor is resolved.
pub fn set_xattr_at(dir: RawFd, name: &str, key: &str, value: &[u8]) -> io::Result<()> {
    let p = format!("/proc/self/fd/{dir}/{name}");
    xattr::set(Path::new(&p), key, value)
}

/// What is free (for root) on the file system of `f`.
pub fn free_space(f: RawFd) -> Option<crate::snapshot::FreeSpace> {
    // SAFETY: the caller's fd stays open for this call.
    nix::sys::statvfs::fstatvfs(unsafe { std::os::fd::BorrowedFd::borrow_raw(f) })
        .ok()
        .map(|st| crate::snapshot::FreeSpace::of(&st))
}
