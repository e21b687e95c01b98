//! Seeding or adopting the persistent store (`/cfy-persist`) crash-safely, and linking each
//! state directory of the image into it.
//!
//! Store layout (the same as the legacy script's, so legacy volumes are adopted in place):
//! the copy of image directory `/var/lib` lives at `<store>/var/lib`. cfy-init's own
//! bookkeeping lives in `<store>/.cfy-init/`: `state.json` (what was seeded or adopted, from
//! which image) and `staging/` (copies in progress; removed and redone after a crash).
//!
//! Crash safety rests on one invariant: a directory appears under its final name only by a
//! `rename` of a complete, synced copy, and is recorded in the state file only afterwards.
//! A complete copy found under its final name but missing from the state file is therefore
//! recorded on the next boot, never copied again.
//!
//! Modules: [`state`] (state file, store layout), [`copy`] (the parallel copy engine),
//! [`adopt`] (deciding per directory: seed, adopt, keep, add missing), [`link`] (symlink or
//! bind mount), [`image`] (image identity), [`fault`] (crash-injection points for tests).

pub mod adopt;
pub mod copy;
pub mod fault;
pub mod image;
pub mod link;
pub mod state;

use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Context, Root, Section};

/// `persist:` section of the config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PersistConfig {
    /// The persistent store (a volume). Missing: continue without persistence, unless
    /// `required`.
    pub store: PathBuf,
    /// Fail the boot when the store is missing.
    pub required: bool,
    /// How each directory is tied to its copy in the store: `symlink` (legacy) or `bind`
    /// (a bind mount; needs CAP_SYS_ADMIN).
    pub link: LinkMode,
    /// The image directories kept in the store. None may contain another.
    pub directories: Vec<DirConfig>,
    /// How often a long copy logs its progress (files, bytes, rate).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub progress_interval: Duration,
    /// Copy threads; 0 means eight per CPU (at least 8, at most 64): a cold-cache copy
    /// waits on reads and metadata I/O far more than it computes.
    pub workers: usize,
    /// How the image is identified (used by `on_new_image: add-missing`).
    pub image_id: ImageIdConfig,
}

/// One image directory kept in the store.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirConfig {
    /// Absolute path of the directory in the image, e.g. `/var/lib`.
    pub path: PathBuf,
    /// What to do when the store was seeded from a different image.
    #[serde(default)]
    pub on_new_image: OnNewImage,
}

/// What a directory already in the store gets from a new image.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum OnNewImage {
    /// Nothing: the store copy is kept as it is (legacy behaviour).
    #[default]
    Keep,
    /// Copy what the new image has and the store lacks; never overwrite anything.
    AddMissing,
}

/// How image directories are tied to the store.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    /// `<dir>` becomes a symlink to `<store>/<dir>`; the image copy moves to `<dir>-initial`.
    #[default]
    Symlink,
    /// `<store>/<dir>` is bind-mounted onto `<dir>` (needs CAP_SYS_ADMIN).
    Bind,
}

/// Where the image identity comes from. The first non-empty source wins: the environment
/// variable `env` (e.g. set to the image tag by the Dockerfile), else a SHA-256 over the
/// contents of `files` (missing ones skipped). It is recorded per directory in the state
/// file; `on_new_image: add-missing` acts when it changes.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ImageIdConfig {
    /// Name of an environment variable holding the image identity.
    pub env: String,
    /// Files whose contents identify the image; none may lie inside a persisted directory.
    pub files: Vec<PathBuf>,
}

impl Default for ImageIdConfig {
    fn default() -> Self {
        Self {
            env: "CFY_IMAGE_ID".into(),
            files: vec!["/etc/os-release".into(), "/etc/cfy-init/image-id".into()],
        }
    }
}

/// The 2021 directory list of the legacy script.
pub const LEGACY_DIRECTORIES: &[&str] = &[
    "/var/lib",
    "/etc/cloudify",
    "/opt/cfy",
    "/opt/cloudify",
    "/opt/cloudify-stage",
    "/opt/manager",
    "/opt/mgmtworker",
    "/opt/restservice",
];

impl Default for PersistConfig {
    fn default() -> Self {
        Self {
            store: PathBuf::from("/cfy-persist"),
            required: false,
            link: LinkMode::Symlink,
            directories: LEGACY_DIRECTORIES
                .iter()
                .map(|p| DirConfig {
                    path: PathBuf::from(p),
                    on_new_image: OnNewImage::Keep,
                })
                .collect(),
            progress_interval: Duration::from_secs(5),
            workers: 0,
            image_id: ImageIdConfig::default(),
        }
    }
}

impl Section for PersistConfig {
    fn reroot(&mut self, root: &Root) {
        root.apply(&mut self.store);
        // The path inside the container (for the place under the store and the report) is
        // recovered with `Root::unroot`.
        for d in &mut self.directories {
            root.apply(&mut d.path);
        }
        for f in &mut self.image_id.files {
            root.apply(f);
        }
    }

    fn validate(&self) -> Result<(), String> {
        check_plain_absolute(&self.store, "persist.store")?;
        let mut seen: Vec<&Path> = Vec::new();
        for d in &self.directories {
            let p = d.path.as_path();
            check_plain_absolute(p, "persist.directories")?;
            if p.parent().is_none() {
                return Err(
                    "persist.directories: `/` cannot be persisted; list its subdirectories".into(),
                );
            }
            if p.starts_with(&self.store) || self.store.starts_with(p) {
                return Err(format!(
                    "persist.directories: {} overlaps the store {}; keep the store outside every persisted directory",
                    p.display(),
                    self.store.display()
                ));
            }
            if let Some(other) = seen.iter().find(|o| p.starts_with(o) || o.starts_with(p)) {
                return Err(format!(
                    "persist.directories: {} and {} overlap; list only one of them",
                    other.display(),
                    p.display()
                ));
            }
            if p.components().nth(1).map(|c| c.as_os_str()) == Some(state::META_DIR.as_ref()) {
                return Err(format!(
                    "persist.directories: {} collides with cfy-init's own {} in the store",
                    p.display(),
                    state::META_DIR
                ));
            }
            seen.push(p);
        }
        for f in &self.image_id.files {
            if let Some(d) = seen.iter().find(|d| f.starts_with(d)) {
                return Err(format!(
                    "persist.image_id.files: {} lies inside the persisted {}; once linked it would be read from the store, pick a file outside it",
                    f.display(),
                    d.display()
                ));
            }
        }
        if self.progress_interval.is_zero() {
            return Err("persist.progress_interval: must be more than 0s".into());
        }
        Ok(())
    }
}

/// Absolute, normalized (no `.`, `..` or trailing slash games), valid UTF-8 free.
fn check_plain_absolute(p: &Path, field: &str) -> Result<(), String> {
    let plain = p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "{field}: {} must be an absolute path without `.` or `..`",
            p.display()
        ))
    }
}

/// What `run` did, for the log and the control API's `/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PersistReport {
    /// The store as configured (re-rooted).
    pub store: PathBuf,
    /// Whether the store existed; false means the boot continues without persistence.
    pub store_found: bool,
    /// This boot (or an interrupted earlier one) seeded the store from nothing: the
    /// first-boot actions (admin password) are due. Cleared by [`confirm_first_seed`].
    pub first_seed: bool,
    /// The store was written by the legacy script (no state file) and adopted this boot.
    pub legacy_adopted: bool,
    /// The identity of the running image (see [`ImageIdConfig`]).
    pub image_id: String,
    /// Staging leftovers of an interrupted earlier boot that were removed.
    pub staging_cleaned: bool,
    /// One entry per configured directory, in config order.
    pub directories: Vec<DirReport>,
}

/// What happened to one directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DirReport {
    /// The directory as seen inside the container, e.g. `/var/lib`.
    pub path: PathBuf,
    pub outcome: DirOutcome,
    /// Files (of any kind but directories) and bytes copied into the store this boot.
    pub files_copied: u64,
    pub bytes_copied: u64,
    pub link: LinkOutcome,
    /// Things worth knowing (skipped sockets, legacy clean-ups, missing xattr support).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// How a directory came to be in the store.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DirOutcome {
    /// Copied from the image this boot.
    Seeded,
    /// Found from the legacy script and recorded as seeded without touching it.
    Adopted,
    /// Already in the store from an earlier boot.
    AlreadyPresent,
    /// Already present; what a new image added was copied in (`add-missing`).
    AddedMissing,
    /// No persistence (no store).
    NotPersisted,
}

/// What the link step did.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LinkOutcome {
    /// The image directory moved to `<dir>-initial` and a symlink was created.
    Linked,
    /// The directory was missing (e.g. an interrupted boot) and the symlink was created.
    Created,
    /// The symlink was already correct and left alone.
    AlreadyLinked,
    /// A symlink with another target (e.g. the legacy `/cfy-persist//var/lib`) was replaced.
    Replaced,
    /// The store copy was bind-mounted onto the directory.
    Mounted,
    /// The bind mount was already in place.
    AlreadyMounted,
    /// Nothing linked (no store).
    None,
}

/// Errors of the persist step: one line naming the path and the fix.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{}: persistent store missing and persist.required is true; mount the volume there or set persist.required: false", path.display())]
    StoreMissing { path: PathBuf },
    // `err` is deliberately not a `#[source]`: the message already includes it, and a
    // source would be printed twice by `{:#}` at the edge.
    #[error("{}: {what}: {err}; {fix}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        fix: String,
        err: io::Error,
    },
    #[error("{}: {problem}; {fix}", path.display())]
    Layout {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("{}: corrupt state file: {reason}; restore it from a backup or move it away to re-adopt the store", path.display())]
    State { path: PathBuf, reason: String },
}

impl PersistError {
    /// An I/O error with a fix chosen from its kind, so every message says what to do.
    pub fn io(path: &Path, what: &'static str, source: io::Error) -> PersistError {
        let fix = match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                "free space on the volume or make it larger; the partial copy is removed at the next boot".into()
            }
            Some(libc::EROFS) => "mount the volume read-write".into(),
            Some(libc::EACCES) | Some(libc::EPERM) => {
                "run cfy-init as root (it needs to keep owners and modes) or fix the permissions".into()
            }
            Some(libc::ENOTDIR) => "a file stands where a directory should be; move it away".into(),
            Some(libc::EIO) => "the volume reports I/O errors; check the disk".into(),
            _ => "check the path and the volume".into(),
        };
        PersistError::Io {
            path: path.to_path_buf(),
            what,
            fix,
            err: source,
        }
    }
}

/// The report of the last `run` in this process (for the control API's `/status`).
static LAST_REPORT: Mutex<Option<PersistReport>> = Mutex::new(None);

/// The report of the last [`run`] in this process, if any.
pub fn last_report() -> Option<PersistReport> {
    LAST_REPORT.lock().ok().and_then(|r| r.clone())
}

/// Seed or adopt the store, then link every configured directory into it.
pub fn run(ctx: &Context) -> Result<PersistReport, PersistError> {
    let report = adopt::run(ctx)?;
    if let Ok(mut last) = LAST_REPORT.lock() {
        *last = Some(report.clone());
    }
    Ok(report)
}

/// Record that the first-boot actions (admin password) are done, so that later boots
/// report `first_seed: false`. Call after they succeeded; a crash before this call makes
/// the next boot report `first_seed: true` again.
pub fn confirm_first_seed(ctx: &Context) -> Result<(), PersistError> {
    state::confirm_first_seed(&ctx.config.persist.store)
}

/// The path of `dir` (as seen in the container) inside `base`: `/var/lib` in `/s` is
/// `/s/var/lib`.
pub(crate) fn under(base: &Path, dir: &Path) -> PathBuf {
    base.join(dir.strip_prefix("/").unwrap_or(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_dirs(dirs: &[&str]) -> PersistConfig {
        PersistConfig {
            directories: dirs
                .iter()
                .map(|p| DirConfig {
                    path: p.into(),
                    on_new_image: OnNewImage::Keep,
                })
                .collect(),
            ..PersistConfig::default()
        }
    }

    #[test]
    fn default_is_the_2021_list_and_valid() {
        let c = PersistConfig::default();
        c.validate().unwrap();
        let paths: Vec<_> = c
            .directories
            .iter()
            .map(|d| d.path.to_str().unwrap())
            .collect();
        assert_eq!(paths, LEGACY_DIRECTORIES);
        let embedded = crate::config::Config::embedded().persist;
        assert_eq!(
            serde_json::to_value(&embedded).unwrap(),
            serde_json::to_value(&c).unwrap()
        );
    }

    #[test]
    fn overlapping_or_odd_directories_are_rejected() {
        let err = |dirs: &[&str]| with_dirs(dirs).validate().unwrap_err();
        assert!(err(&["/opt", "/opt/manager"]).contains("/opt and /opt/manager overlap"));
        assert!(err(&["/opt/manager", "/opt"]).contains("overlap"));
        assert!(err(&["/opt/manager", "/opt/manager"]).contains("overlap"));
        assert!(err(&["/cfy-persist/x"]).contains("overlaps the store"));
        assert!(err(&["opt/manager"]).contains("absolute"));
        assert!(err(&["/opt/../etc"]).contains("absolute path without"));
        assert!(err(&["/"]).contains("cannot be persisted"));
        assert!(err(&["/.cfy-init"]).contains("collides"));
        // Siblings sharing a name prefix are fine.
        with_dirs(&["/opt/cloudify", "/opt/cloudify-stage"])
            .validate()
            .unwrap();
    }

    #[test]
    fn image_id_files_inside_persisted_directories_are_rejected() {
        let mut c = PersistConfig::default();
        c.image_id.files = vec!["/etc/cloudify/version".into()];
        assert!(c
            .validate()
            .unwrap_err()
            .contains("lies inside the persisted /etc/cloudify"));
    }

    #[test]
    fn reroot_moves_store_directories_and_identity_files() {
        let mut c = PersistConfig::default();
        let root = Root::new("/tmp/r");
        c.reroot(&root);
        assert_eq!(c.store, PathBuf::from("/tmp/r/cfy-persist"));
        assert_eq!(c.directories[0].path, PathBuf::from("/tmp/r/var/lib"));
        assert_eq!(c.image_id.files[0], PathBuf::from("/tmp/r/etc/os-release"));
    }

    #[test]
    fn errors_name_the_path_and_the_fix() {
        let e = PersistError::io(
            Path::new("/s/x"),
            "cannot write",
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("/s/x: cannot write: No space left on device"),
            "{msg}"
        );
        assert!(msg.contains("free space"), "{msg}");
        assert!(!msg.contains('\n'));
    }
}
