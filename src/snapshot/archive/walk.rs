//! Walking the store for an archive pass: every entry in tree order with the `lstat` it
//! was read at, and the stamp a later pass compares to tell what changed.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::snapshot::manifest;
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
    pub(super) link: Option<String>,
}

impl Found {
    pub(super) fn file_size(&self) -> u64 {
        if self.meta.is_file() {
            self.meta.len()
        } else {
            0
        }
    }
}

/// Every entry below `root` in tree order (sorted names, a directory before its contents);
/// the snapshot machinery's own top-level names are left out. Entries that vanish while
/// the walk runs (a live store) are skipped; the next pass sees what is there then.
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
            Some(link_target(&path, &rel)?)
        } else if ft.is_dir() || ft.is_file() {
            None
        } else {
            // Sockets, FIFOs and device nodes are runtime objects, not data.
            tracing::warn!(path = %path.display(), "snapshot: skipping special file");
            continue;
        };
        let is_dir = ft.is_dir();
        out.push(Found {
            rel: rel.clone(),
            path: path.clone(),
            meta,
            link,
        });
        if is_dir {
            walk_dir(&path, &rel, out)?;
        }
    }
    Ok(())
}

/// A symlink's target, refused when restore would refuse it.
pub(super) fn link_target(path: &Path, rel: &str) -> Result<String, SnapshotError> {
    let target = fs::read_link(path).map_err(|e| SnapshotError::io(path, e))?;
    let target = target.to_str().ok_or_else(|| {
        SnapshotError::Other(format!("{}: link target is not UTF-8", path.display()))
    })?;
    manifest::check_link_target(rel, target).map_err(|m| {
        SnapshotError::Other(format!("cannot snapshot {m}: make the link relative"))
    })?;
    Ok(target.to_string())
}
