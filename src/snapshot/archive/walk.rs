//! Walking the store for an archive pass: every entry in tree order with the `lstat` it
//! was read at, and the stamp a later pass compares to tell what changed.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::snapshot::{is_reserved, SnapshotError};

/// A file whose ctime is this close to (or after) the start of the walk that read it is
/// re-read by the next pass: the kernel stamps files from a clock that advances once per
/// tick, and a write within the tick of the last stamp leaves the stamp as it was. Four
/// ticks of that clock, and never less than this floor.
pub(super) const RACY_MARGIN_FLOOR: Duration = Duration::from_millis(50);

/// See [`RACY_MARGIN_FLOOR`].
pub(super) fn racy_margin() -> Duration {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_getres writes one timespec into `res`.
    let tick = if unsafe { libc::clock_getres(libc::CLOCK_REALTIME_COARSE, &mut res) } == 0 {
        Duration::new(
            res.tv_sec.max(0) as u64,
            res.tv_nsec.clamp(0, 999_999_999) as u32,
        )
    } else {
        Duration::from_secs(1)
    };
    (tick * 4).max(RACY_MARGIN_FLOOR)
}

/// The file state an entry was read at; any change to the entry changes it (a write sets
/// mtime and ctime, chmod/chown/rename set ctime, a replacement changes the inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Stamp {
    pub(super) fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
        }
    }

    /// Changed at or after `t` (by the ctime, which no program can set back).
    pub(super) fn changed_since(&self, t: SystemTime) -> bool {
        let t = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let (s, ns) = self.ctime;
        (s, ns) >= (t.as_secs() as i64, i64::from(t.subsec_nanos()))
    }
}

/// One entry found by a walk of the tree.
pub(super) struct Found {
    pub(super) rel: String,
    pub(super) path: PathBuf,
    pub(super) meta: fs::Metadata,
    /// A symlink's target.
    pub(super) link: Option<String>,
    /// Extended attributes (ACLs included), sorted by name.
    pub(super) xattrs: Vec<(String, Vec<u8>)>,
    /// For a further name of a multiply linked file: the store path it is archived under
    /// (set when the pass plans its members).
    pub(super) hard: Option<String>,
}

impl Found {
    /// Bytes of data the member carries.
    pub(super) fn file_size(&self) -> u64 {
        if self.has_data() {
            self.meta.len()
        } else {
            0
        }
    }

    /// A regular file archived with its data (not a further name of one).
    pub(super) fn has_data(&self) -> bool {
        self.meta.is_file() && self.hard.is_none()
    }

    /// A regular file with more than one name.
    pub(super) fn inode(&self) -> Option<(u64, u64)> {
        (self.meta.is_file() && self.meta.nlink() > 1).then(|| (self.meta.dev(), self.meta.ino()))
    }

    /// A regular file with holes: fewer blocks allocated than its size needs.
    pub(super) fn sparse(&self) -> bool {
        self.has_data() && self.meta.blocks().saturating_mul(512) < self.meta.len()
    }
}

/// Every entry below `root` in tree order (sorted names, a directory before its contents);
/// the snapshot machinery's own top-level names are left out. Entries that vanish while
/// the walk runs (a live store) are skipped; the next pass sees what is there then.
/// Sockets are skipped with a note (a runtime object, remade by whoever listens on it);
/// a device node fails the snapshot, since restore would refuse it.
pub(super) fn walk_tree(root: &Path) -> Result<Vec<Found>, SnapshotError> {
    let mut out = Vec::new();
    walk_dir(root, "", &mut out)?;
    Ok(out)
}

pub(super) fn walk_dir(dir: &Path, rel: &str, out: &mut Vec<Found>) -> Result<(), SnapshotError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !rel.is_empty() => return Ok(()),
        Err(e) => return Err(SnapshotError::io(dir, e)),
    };
    let mut names: Vec<_> = rd
        .map(|r| r.map(|d| d.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| SnapshotError::io(dir, e))?;
    names.sort();
    for name in names {
        if rel.is_empty() && is_reserved(&name) {
            continue;
        }
        let path = dir.join(&name);
        let name = name.to_str().ok_or_else(|| {
            SnapshotError::Other(format!("{}: file name is not UTF-8", path.display()))
        })?;
        let rel = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SnapshotError::io(&path, e)),
        };
        let ft = meta.file_type();
        let link = if ft.is_symlink() {
            match link_target(&path) {
                Ok(t) => Some(t),
                Err(SnapshotError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        } else if ft.is_dir() || ft.is_file() || ft.is_fifo() {
            None
        } else if ft.is_socket() {
            tracing::info!(path = %path.display(), "snapshot: socket left out (a runtime object)");
            continue;
        } else {
            return Err(SnapshotError::Other(format!(
                "{}: device node in the store: not data, and restore refuses it; remove it",
                path.display()
            )));
        };
        let xattrs = read_xattrs(&path)?;
        let is_dir = ft.is_dir();
        out.push(Found {
            rel: rel.clone(),
            path: path.clone(),
            meta,
            link,
            xattrs,
            hard: None,
        });
        if is_dir {
            walk_dir(&path, &rel, out)?;
        }
    }
    Ok(())
}

/// A symlink's target, as it is: never followed, any target kept.
pub(super) fn link_target(path: &Path) -> Result<String, SnapshotError> {
    let target = fs::read_link(path).map_err(|e| SnapshotError::io(path, e))?;
    let target = target.to_str().ok_or_else(|| {
        SnapshotError::Other(format!("{}: link target is not UTF-8", path.display()))
    })?;
    Ok(target.to_string())
}

/// The extended attributes of `path` itself (never of a link's target), sorted by name.
/// A file system without xattrs has none.
pub(super) fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>, SnapshotError> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOENT)) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(SnapshotError::io(path, e)),
    };
    let mut out = Vec::new();
    for name in names {
        let Some(n) = name.to_str() else {
            return Err(SnapshotError::Other(format!(
                "{}: extended attribute name is not UTF-8",
                path.display()
            )));
        };
        match xattr::get(path, &name) {
            Ok(Some(v)) => out.push((n.to_string(), v)),
            Ok(None) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA) | Some(libc::ENOENT)) => {}
            Err(e) => return Err(SnapshotError::io(path, e)),
        }
    }
    out.sort();
    Ok(out)
}
