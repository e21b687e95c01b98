//! Snapshot archives of the store (tar + zstd with a manifest), their verification, and
//! restore with staging, swap and rollback. [`Engine`] is the entry point used by the
//! hooks API; the file formats live in [`archive`] (writer), [`verify`] (reader) and
//! [`manifest`].

pub mod archive;
pub mod cloudify;
pub mod control;
pub mod copy;
mod engine;
pub mod jobs;
pub mod manifest;
pub mod remote;
pub mod restore;
pub mod schedule;
pub mod verify;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Root, Section};

pub use engine::{clone_err, Engine, RestoreSource, SnapshotMeta};
pub use jobs::{JobInfo, JobKind, JobState};

/// Names inside the store that belong to the snapshot machinery (staging copies, rollback
/// copy, journal). They are never archived and never swapped.
pub const RESERVED_PREFIX: &str = ".cfy-snapshot-";

/// `snapshot:` section of the config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Directory to snapshot and restore; unset = `persist.store`.
    pub store: Option<PathBuf>,
    /// Where archives (`<id>.tar.zst`) and their metadata (`<id>.json`) are kept. Must be
    /// outside the store.
    pub archive_dir: PathBuf,
    /// Keep this many snapshots; older ones are deleted after a good snapshot (0 = all).
    pub keep: usize,
    /// Archive the live store first and pause the writers only to read again what changed
    /// meanwhile (by size, mtime, ctime, inode, owner and mode, and anything changed too
    /// shortly before it was read for its timestamps to tell). `false`: pause for a full
    /// copy of the store (a reflink where the file system can), then archive the copy. Use `false` for writers that change
    /// files only through shared memory maps, whose writes may leave the timestamps alone.
    pub precopy: bool,
    /// How writers are paused while the store is copied.
    pub quiesce: Quiesce,
    /// zstd settings of the archive.
    pub compression: Compression,
    /// Limits enforced while verifying an archive for restore (decompression bombs).
    pub limits: Limits,
    /// When the rollback copy made by a restore is deleted.
    pub keep_rollback: KeepRollback,
    /// After a restore, how long the restarted services get to become ready before the
    /// old store is swapped back.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ready_timeout: Duration,
    /// Optional Cloudify-level snapshots through the manager's REST API.
    pub cloudify: Option<CloudifyRest>,
    /// Off-host copies in OpenStack Swift (`snapshot create --upload`, scheduled uploads,
    /// `restore swift://CONTAINER/OBJECT`). Off when unset.
    pub remote: Option<remote::RemoteConfig>,
    /// Periodic snapshots taken by cfy-init (interval, jitter, upload). Off when unset.
    pub schedule: Option<remote::ScheduleConfig>,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            store: None,
            archive_dir: PathBuf::from("/cfy-persist-snapshots"),
            keep: 3,
            precopy: true,
            quiesce: Quiesce::default(),
            compression: Compression::default(),
            limits: Limits::default(),
            keep_rollback: KeepRollback::UntilNextSnapshot,
            ready_timeout: Duration::from_secs(300),
            cloudify: None,
            remote: None,
            schedule: None,
        }
    }
}

/// Pausing the writers of the store for the copy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Quiesce {
    /// Services stopped (in this order) before the copy and started (in reverse order)
    /// after it; also the services stopped around a restore. Unknown names are skipped
    /// with a warning so one list fits several manager versions.
    pub services: Vec<String>,
    /// Services that keep running through a snapshot (with `precopy`) and are stopped only
    /// around a restore (after `services`), because what they write need not be consistent
    /// with the rest of the store (see docs/operations.md for RabbitMQ). Their files are
    /// under `live_paths`.
    pub live_services: Vec<String>,
    /// Store-relative directories (e.g. `var/lib/rabbitmq`) written by `live_services`: a
    /// file below them that changes while the paused pass reads it is archived as read
    /// instead of failing the snapshot.
    pub live_paths: Vec<PathBuf>,
    /// Commands (argv) run before the services are stopped, e.g. a database CHECKPOINT (with
    /// `precopy`, after the first pass over the live store, so that what they flush is read
    /// again before the pause rather than during it); a failure aborts.
    pub pre: Vec<Vec<String>>,
    /// Commands (argv) run after the copy, even when it failed.
    pub post: Vec<Vec<String>>,
}

/// zstd settings.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Compression {
    /// zstd level (1-19).
    pub level: i32,
    /// Compression threads (0 = one per CPU).
    pub threads: u32,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            level: 3,
            threads: 0,
        }
    }
}

/// Limits for archives to restore.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Total uncompressed bytes of all files.
    pub max_total_bytes: u64,
    /// Bytes of one file.
    pub max_file_bytes: u64,
    /// Number of entries.
    pub max_entries: u64,
    /// Bytes of an uploaded (compressed) archive.
    pub max_upload_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_total_bytes: 256 << 30,
            max_file_bytes: 64 << 30,
            max_entries: 10_000_000,
            max_upload_bytes: 256 << 30,
        }
    }
}

/// When the rollback copy of a restore is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeepRollback {
    /// Deleted after the next good snapshot.
    UntilNextSnapshot,
    /// Deleted as soon as the restored services are ready.
    Never,
    /// Kept until the next restore replaces it.
    Always,
}

/// Cloudify REST snapshot settings.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudifyRest {
    /// Base URL of the manager, e.g. `https://127.0.0.1:53333`.
    pub url: String,
    /// Tenant header value.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    pub username: String,
    /// Password; or use `password_file`.
    #[serde(default)]
    pub password: Option<crate::config::Secret>,
    /// File holding the password (host path).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

fn default_tenant() -> String {
    "default_tenant".into()
}

impl Section for SnapshotConfig {
    fn reroot(&mut self, root: &Root) {
        if let Some(s) = &mut self.store {
            root.apply(s);
        }
        root.apply(&mut self.archive_dir);
        if let Some(c) = &mut self.cloudify {
            if let Some(f) = &mut c.password_file {
                root.apply(f);
            }
        }
        if let Some(f) = self.remote.as_mut().and_then(|r| r.clouds_file.as_mut()) {
            root.apply(f);
        }
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(store) = &self.store {
            if self.archive_dir.starts_with(store) {
                return Err("snapshot.archive_dir must be outside snapshot.store".into());
            }
        }
        if self
            .schedule
            .as_ref()
            .is_some_and(|s| s.every < Duration::from_secs(1))
        {
            return Err("snapshot.schedule.every must be at least 1s".into());
        }
        if !(1..=22).contains(&self.compression.level) {
            return Err("snapshot.compression.level must be within 1..=22".into());
        }
        Ok(())
    }
}

/// Errors of snapshot and restore operations.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("another snapshot or restore is running ({0}); try again when it is done")]
    Busy(String),
    #[error("no such snapshot: {0}")]
    NotFound(String),
    #[error("bad snapshot id {0:?}: use letters, digits, '-', '_' and '.'")]
    BadId(String),
    #[error("archive rejected: {0}")]
    Rejected(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no space left on the device: at least {needed} bytes needed, {free} free", path.display())]
    NoSpace {
        path: PathBuf,
        needed: u64,
        free: u64,
    },
    #[error("{}: no free inodes left on the device: at least {needed} files needed, {free} free; remove files there or give the file system more inodes", path.display())]
    NoInodes {
        path: PathBuf,
        needed: u64,
        free: u64,
    },
    #[error("quiesce: {0}")]
    Quiesce(String),
    #[error("restore failed and the previous store was put back: {0}")]
    RolledBack(String),
    #[error("{0}")]
    Other(String),
    #[error("{0}")]
    Remote(String),
    #[error("snapshot.cloudify is not configured")]
    NoCloudify,
}

impl SnapshotError {
    pub fn io(path: &Path, source: std::io::Error) -> SnapshotError {
        SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// An error of writing to the existing file `path`: out of space (ENOSPC, EDQUOT)
    /// becomes [`NoSpace`] naming `needed` (a lower bound) and what the file system has
    /// free now.
    ///
    /// [`NoSpace`]: SnapshotError::NoSpace
    pub fn write(path: &Path, source: std::io::Error, needed: u64) -> SnapshotError {
        Self::out_of_room(path, source, needed, 0)
    }

    /// An error of creating the file `path` and writing `needed` bytes to it: as
    /// [`write`](SnapshotError::write), or [`NoInodes`] when it is the inodes that ran out
    /// (ENOSPC says either).
    ///
    /// [`NoInodes`]: SnapshotError::NoInodes
    pub fn create(path: &Path, source: std::io::Error, needed: u64) -> SnapshotError {
        Self::out_of_room(path, source, needed, 1)
    }

    fn out_of_room(path: &Path, source: std::io::Error, bytes: u64, inodes: u64) -> SnapshotError {
        if is_no_space(&source) {
            no_space_on(path, path, bytes, inodes)
        } else {
            SnapshotError::io(path, source)
        }
    }

    /// The same error with what [`NoSpace`](SnapshotError::NoSpace) or
    /// [`NoInodes`](SnapshotError::NoInodes) reports free measured again, after the caller
    /// removed what the failed job had written.
    pub fn refresh_free(self) -> SnapshotError {
        match self {
            SnapshotError::NoSpace { path, needed, .. } => SnapshotError::NoSpace {
                free: free_bytes(&path),
                path,
                needed,
            },
            SnapshotError::NoInodes { path, needed, .. } => SnapshotError::NoInodes {
                free: free_space(&path).map_or(0, |f| f.inodes),
                path,
                needed,
            },
            other => other,
        }
    }
}

/// Out of room for `path`, which needs at least `bytes` and `inodes` more, with what is
/// free measured on the file system of `fs_path` (`path` itself, or where it was when
/// the failed job removed it): see [`no_space_with`].
pub fn no_space_on(path: &Path, fs_path: &Path, bytes: u64, inodes: u64) -> SnapshotError {
    no_space_with(path, free_space(fs_path), bytes, inodes)
}

/// Out of room for `path`, which needs at least `bytes` and `inodes` more, given what is
/// `free`: the inodes when the file system has fewer free than that (and counts them),
/// else the bytes.
pub fn no_space_with(
    path: &Path,
    free: Option<FreeSpace>,
    bytes: u64,
    inodes: u64,
) -> SnapshotError {
    match free {
        Some(f) if f.lacks_inodes(inodes) => SnapshotError::NoInodes {
            path: path.to_path_buf(),
            needed: inodes,
            free: f.inodes,
        },
        _ => SnapshotError::NoSpace {
            path: path.to_path_buf(),
            needed: bytes,
            free: free.map_or(0, |f| f.bytes),
        },
    }
}

/// What a file system has free, for root.
#[derive(Debug, Clone, Copy)]
pub struct FreeSpace {
    pub bytes: u64,
    pub inodes: u64,
    /// False where the file system has no inode limit (btrfs reports 0 inodes in all).
    pub counts_inodes: bool,
}

impl FreeSpace {
    /// Fewer than `n` inodes free, on a file system that counts them.
    pub fn lacks_inodes(&self, n: u64) -> bool {
        self.counts_inodes && self.inodes < n
    }

    pub fn of(st: &nix::sys::statvfs::Statvfs) -> FreeSpace {
        FreeSpace {
            bytes: st.blocks_free() * st.fragment_size(),
            inodes: st.files_free(),
            counts_inodes: st.files() > 0,
        }
    }
}

/// What the file system holding `path` (or its nearest existing ancestor, since a failed
/// job removes what it wrote) has free.
pub fn free_space(path: &Path) -> Option<FreeSpace> {
    path.ancestors()
        .find_map(|a| nix::sys::statvfs::statvfs(a).ok())
        .map(|st| FreeSpace::of(&st))
}

/// Out of space or over a quota.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Free bytes of the file system holding `path` (or its nearest existing ancestor); 0 when
/// unknown.
pub fn free_bytes(path: &Path) -> u64 {
    free_space(path).map_or(0, |f| f.bytes)
}

/// Boot-time cleanup: finish (roll back) a restore the init died in the middle of, and
/// remove stale staging copies. Call before anything uses the store.
pub fn recover_at_boot(ctx: &crate::config::Context) -> Result<(), SnapshotError> {
    let store = ctx
        .config
        .snapshot
        .store
        .clone()
        .unwrap_or_else(|| ctx.config.persist.store.clone());
    if restore::recover_interrupted(&store)? {
        tracing::warn!(store = %store.display(), "an interrupted restore was rolled back");
    }
    let dir = &ctx.config.snapshot.archive_dir;
    remove_partial_archives(dir);
    make_private(dir);
    warn_if_on_container_layer(dir);
    Ok(())
}

/// The archive directory as a snapshot needs it: made if missing, 0700, owned by the
/// init's user (root): archives hold the store's secrets.
pub fn private_dir(dir: &Path) -> Result<(), SnapshotError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| SnapshotError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| SnapshotError::io(dir, e))
}

/// At boot: an archive directory and archives made by an older cfy-init (0755 and 0644)
/// are made private (0700, files 0600).
fn make_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let fix = |p: &Path, mode: u32| {
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return;
        };
        if m.permissions().mode() & 0o777 & !mode != 0 {
            if let Err(e) = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)) {
                tracing::warn!(path = %p.display(), error = %e, "cannot make an archive private");
            }
        }
    };
    fix(dir, 0o700);
    for item in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if item.file_type().is_ok_and(|t| t.is_file()) {
            fix(&item.path(), 0o600);
        }
    }
}

/// `statfs` magic of overlayfs, the file system of a container's own layer.
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// Archives kept in the container's own (overlay) layer are lost with the container (a
/// `docker rm`, a new pod): say so once at boot, with the fix.
fn warn_if_on_container_layer(dir: &Path) {
    let Some(existing) = dir.ancestors().find(|a| a.exists()) else {
        return;
    };
    if on_overlay(existing) {
        tracing::warn!(
            archive_dir = %dir.display(),
            "snapshot.archive_dir lies on the container's own layer: its archives are lost \
             with the container; mount a volume there (docker run -v NAME:{}, or the chart's \
             snapshot volume) or set snapshot.archive_dir to a directory on one",
            dir.display()
        );
    }
}

/// True when `path` lies on an overlay file system.
fn on_overlay(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == OVERLAYFS_SUPER_MAGIC)
}

/// Archives a crash cut short (`.<id>.tar.zst.partial`, `.compact`, `.upload-*.partial`)
/// are never valid and never listed; at boot no job can be writing them.
fn remove_partial_archives(dir: &Path) {
    for item in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && (name.ends_with(".partial") || name.ends_with(".compact")) {
            match std::fs::remove_file(item.path()) {
                Ok(()) => {
                    tracing::info!(path = %item.path().display(), "removed a partial archive")
                }
                Err(e) => {
                    tracing::warn!(path = %item.path().display(), error = %e, "cannot remove a partial archive")
                }
            }
        }
    }
}

/// Snapshot ids are file names in the archive directory: keep them boring.
pub fn check_id(id: &str) -> Result<(), SnapshotError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::BadId(id.to_string()))
    }
}

/// True for top-level store names that the snapshot machinery owns.
pub fn is_reserved(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with(RESERVED_PREFIX)
}

#[cfg(test)]
mod tests {
    /// Partial archives a crash left go at boot; finished ones and their metadata stay.
    #[test]
    fn boot_removes_partial_archives_only() {
        let tmp = tempfile::tempdir().unwrap();
        let names = [
            ".a.tar.zst.partial",
            ".a.tar.zst.compact",
            ".upload-x.partial",
            "b.tar.zst",
            "b.json",
        ];
        for n in names {
            std::fs::write(tmp.path().join(n), b"x").unwrap();
        }
        super::remove_partial_archives(tmp.path());
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["b.json", "b.tar.zst"]);
    }
}
