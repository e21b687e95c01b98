//! Restoring the Kubernetes service-account credentials mount (link or bind the source onto
//! the target) without ever copying the token, and keeping it restored.
//!
//! Kubernetes mounts the credentials at `/var/run/secrets/kubernetes.io/serviceaccount`; in
//! the image `/var/run` links to `/run`, and anything that later mounts over `/run` hides
//! them. The chart also mounts them at `/secret`. This step makes the target show the
//! source: a symlink (default) or a bind mount. Bound tokens rotate (the kubelet swaps the
//! files), so a copy would go stale: the token is never copied, nor even read.

mod resolve;

use std::io;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use resolve::resolve_in_root;

use crate::config::{Context, Root, Section};

/// `secret:` section of the config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SecretConfig {
    /// Where the credentials are mounted reliably (the chart's extra mount).
    pub source: PathBuf,
    /// Where clients look for them.
    pub target: PathBuf,
    /// `symlink` (target becomes a link to source) or `bind` (source bind-mounted on
    /// target; needs CAP_SYS_ADMIN).
    pub mode: SecretMode,
    /// Fail the boot when the source or one of `files` is missing (else: a warning).
    pub required: bool,
    /// Files that must be present in the source and visible through the target.
    pub files: Vec<String>,
    /// How often the watcher re-checks after services start (0s: no watcher).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub recheck_interval: Duration,
}

impl Default for SecretConfig {
    fn default() -> Self {
        Self {
            source: PathBuf::from("/secret"),
            target: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount"),
            mode: SecretMode::Symlink,
            required: false,
            files: ["token", "ca.crt", "namespace"].map(String::from).to_vec(),
            recheck_interval: Duration::from_secs(30),
        }
    }
}

impl Section for SecretConfig {
    fn reroot(&mut self, root: &Root) {
        root.apply(&mut self.source);
        root.apply(&mut self.target);
    }

    fn validate(&self) -> Result<(), String> {
        if self.files.iter().any(|f| f.is_empty() || f.contains('/')) {
            return Err("secret.files: names must be plain file names".into());
        }
        Ok(())
    }
}

/// How the target is made to show the source.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SecretMode {
    #[default]
    Symlink,
    Bind,
}

/// What the step found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretState {
    /// The target already showed the credentials (Kubernetes' own mount, or our link).
    Present,
    /// The target was missing, empty or wrong and is now a link to the source.
    Linked,
    /// The source was bind-mounted on the target.
    Mounted,
    /// No source directory: nothing to do (not required).
    SourceMissing,
}

/// Result of [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretReport {
    /// The target as resolved on the host (parent links followed inside the root).
    pub target: PathBuf,
    pub state: SecretState,
    /// Names from `secret.files` missing in the source.
    pub missing_files: Vec<String>,
}

/// Errors of the secret step. Never contains file contents.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{}: no service-account credentials here (mount them, or set secret.required: false)", path.display())]
    SourceMissing { path: PathBuf },
    #[error("{}: missing {names} (check the service-account mount, or set secret.required: false)", path.display())]
    FilesMissing { path: PathBuf, names: String },
    #[error("{}: is {what}, not the credentials; remove it or use secret.mode: bind", path.display())]
    TargetOccupied { path: PathBuf, what: &'static str },
    #[error("{}: cannot {action}: {source}{hint}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
        hint: &'static str,
    },
}

/// How many times the watcher had to restore the target (for `/metrics`).
pub static RESTORES: AtomicU64 = AtomicU64::new(0);

/// The restore counter's current value.
pub fn restore_count() -> u64 {
    RESTORES.load(Ordering::Relaxed)
}

/// Make the target show the source once (the boot step).
pub fn run(ctx: &Context) -> Result<SecretReport, SecretError> {
    let report = ensure(&ctx.config.secret, &ctx.root)?;
    warn_missing(&ctx.config.secret.source, &report.missing_files);
    log_report(&report, false);
    Ok(report)
}

/// Re-check every `secret.recheck_interval` and restore the link or mount when something
/// hid it (a tmpfs over `/run`, say), counting each restore in [`RESTORES`]. Runs until
/// the task is dropped; returns at once when the interval is zero.
pub async fn watch(ctx: Context) {
    let cfg = ctx.config.secret.clone();
    if cfg.recheck_interval.is_zero() {
        return;
    }
    // The boot step checked just now: the first recheck is one interval later (an immediate
    // tick would start a blocking-pool thread during start-up for nothing).
    let first = tokio::time::Instant::now() + cfg.recheck_interval;
    let mut tick = tokio::time::interval_at(first, cfg.recheck_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    let mut last_missing: Vec<String> = Vec::new();
    loop {
        tick.tick().await;
        let (c, root) = (cfg.clone(), ctx.root.clone());
        let result = tokio::task::spawn_blocking(move || ensure(&c, &root))
            .await
            .unwrap_or_else(|e| {
                Err(SecretError::Io {
                    path: cfg.target.clone(),
                    action: "check",
                    source: io::Error::other(e.to_string()),
                    hint: "",
                })
            });
        match result {
            Ok(report) => {
                last_error = None;
                if report.missing_files != last_missing {
                    warn_missing(&cfg.source, &report.missing_files);
                    last_missing = report.missing_files.clone();
                }
                if matches!(report.state, SecretState::Linked | SecretState::Mounted) {
                    RESTORES.fetch_add(1, Ordering::Relaxed);
                    log_report(&report, true);
                }
            }
            Err(e) => {
                // One line per new problem, not one per tick.
                let msg = e.to_string();
                if last_error.as_deref() != Some(&msg) {
                    tracing::warn!("service-account credentials: {msg}");
                    last_error = Some(msg);
                }
            }
        }
    }
}

fn warn_missing(source: &Path, missing: &[String]) {
    if !missing.is_empty() {
        let err = SecretError::FilesMissing {
            path: source.to_path_buf(),
            names: missing.join(", "),
        };
        tracing::warn!("{err}");
    }
}

fn log_report(r: &SecretReport, restored: bool) {
    let target = r.target.display();
    match (r.state, restored) {
        (SecretState::Present, _) => {
            tracing::info!(target = %target, "service-account credentials present")
        }
        (SecretState::SourceMissing, _) => {
            tracing::info!(target = %target, "no service-account credentials source; skipped")
        }
        (state, false) => {
            tracing::info!(target = %target, ?state, "service-account credentials linked")
        }
        (state, true) => tracing::warn!(
            target = %target,
            ?state,
            restores = restore_count(),
            "service-account credentials were hidden (e.g. a mount over /run); restored"
        ),
    }
}

/// Check the source, then make the target show it. Idempotent.
pub fn ensure(cfg: &SecretConfig, root: &Root) -> Result<SecretReport, SecretError> {
    let target = resolved_target(cfg, root);
    if !cfg.source.is_dir() {
        if cfg.required {
            return Err(SecretError::SourceMissing {
                path: cfg.source.clone(),
            });
        }
        return Ok(SecretReport {
            target,
            state: SecretState::SourceMissing,
            missing_files: Vec::new(),
        });
    }
    let missing_files = missing_in(&cfg.source, &cfg.files);
    if !missing_files.is_empty() && cfg.required {
        return Err(SecretError::FilesMissing {
            path: cfg.source.clone(),
            names: missing_files.join(", "),
        });
    }
    let state = install(cfg, &target)?;
    let report = SecretReport {
        target,
        state,
        missing_files,
    };
    // What is in the source must now be visible through the target.
    let unseen: Vec<String> = missing_in(&report.target, &cfg.files)
        .into_iter()
        .filter(|f| !report.missing_files.contains(f))
        .collect();
    if !unseen.is_empty() {
        return Err(SecretError::FilesMissing {
            path: report.target.clone(),
            names: unseen.join(", "),
        });
    }
    Ok(report)
}

/// The target with the links along its parent followed inside the root (the last
/// component is ours to create or replace, so it is not followed).
fn resolved_target(cfg: &SecretConfig, root: &Root) -> PathBuf {
    let Some(name) = cfg.target.file_name() else {
        return cfg.target.clone();
    };
    let parent = crate::fsutil::parent_of(&cfg.target);
    resolve_in_root(root, parent).join(name)
}

/// Names from `files` that are not present in `dir` (links followed: Kubernetes projects
/// them through `..data` links).
fn missing_in(dir: &Path, files: &[String]) -> Vec<String> {
    files
        .iter()
        .filter(|f| std::fs::metadata(dir.join(f)).is_err())
        .cloned()
        .collect()
}

/// Same file system object (device and inode).
fn same_object(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> SecretError {
    let path = path.to_path_buf();
    move |source| {
        let hint = if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES))
            && action == "bind-mount the source on"
        {
            " (bind mode needs CAP_SYS_ADMIN; use secret.mode: symlink)"
        } else {
            ""
        };
        SecretError::Io {
            path,
            action,
            source,
            hint,
        }
    }
}

/// Make `target` show the source, doing nothing when it already does.
fn install(cfg: &SecretConfig, target: &Path) -> Result<SecretState, SecretError> {
    if same_object(target, &cfg.source) {
        return Ok(SecretState::Present);
    }
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = crate::fsutil::parent_of(target);
            std::fs::create_dir_all(parent).map_err(io_err(parent, "create the parent of"))?;
            attach(cfg, target)
        }
        Err(e) => Err(io_err(target, "inspect")(e)),
        Ok(m) if m.file_type().is_symlink() => {
            // Our own link, or one that shows a complete set of credentials, is left
            // alone; any other link (dangling, stale) is replaced.
            let ours = std::fs::read_link(target).is_ok_and(|t| t == cfg.source);
            if ours || (missing_in(target, &cfg.files).is_empty() && target.is_dir()) {
                return Ok(SecretState::Present);
            }
            match cfg.mode {
                SecretMode::Symlink => replace_link(&cfg.source, target),
                SecretMode::Bind => {
                    std::fs::remove_file(target)
                        .map_err(io_err(target, "remove the stale link"))?;
                    attach(cfg, target)
                }
            }
        }
        Ok(m) if m.is_dir() => {
            if missing_in(target, &cfg.files).is_empty() {
                // Kubernetes' own mount is visible: nothing hides it.
                return Ok(SecretState::Present);
            }
            let empty = std::fs::read_dir(target)
                .map_err(io_err(target, "read"))?
                .next()
                .is_none();
            match (cfg.mode, empty) {
                (SecretMode::Bind, _) => bind(&cfg.source, target),
                (SecretMode::Symlink, true) => match std::fs::remove_dir(target) {
                    Ok(()) => replace_link(&cfg.source, target),
                    // An empty mount point (something mounted over the target itself)
                    // cannot be replaced by a link; mounting the source over it can.
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        tracing::info!(target = %target.display(), "target is a mount point; bind-mounting the source over it");
                        bind(&cfg.source, target)
                    }
                    Err(e) => Err(io_err(target, "remove the empty")(e)),
                },
                (SecretMode::Symlink, false) => Err(SecretError::TargetOccupied {
                    path: target.to_path_buf(),
                    what: "a non-empty directory",
                }),
            }
        }
        Ok(_) => Err(SecretError::TargetOccupied {
            path: target.to_path_buf(),
            what: "a file",
        }),
    }
}

/// Create the link or mount on a target that does not exist.
fn attach(cfg: &SecretConfig, target: &Path) -> Result<SecretState, SecretError> {
    match cfg.mode {
        SecretMode::Symlink => replace_link(&cfg.source, target),
        SecretMode::Bind => {
            std::fs::create_dir(target).map_err(io_err(target, "create"))?;
            bind(&cfg.source, target)
        }
    }
}

/// Point `target` at `source` atomically: a new link under a temp name, renamed over.
fn replace_link(source: &Path, target: &Path) -> Result<SecretState, SecretError> {
    let tmp = crate::fsutil::staging_name(target);
    symlink(source, &tmp).map_err(io_err(&tmp, "create a link at"))?;
    if let Err(e) = std::fs::rename(&tmp, target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(target, "link")(e));
    }
    let _ = crate::fsutil::fsync_dir(crate::fsutil::parent_of(target));
    Ok(SecretState::Linked)
}

fn bind(source: &Path, target: &Path) -> Result<SecretState, SecretError> {
    use nix::mount::{mount, MsFlags};
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| io_err(target, "bind-mount the source on")(io::Error::from(e)))?;
    Ok(SecretState::Mounted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(files: &[&str]) -> (tempfile::TempDir, SecretConfig, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(dir.path().join("secret")).unwrap();
        for f in files {
            std::fs::write(dir.path().join("secret").join(f), "x").unwrap();
        }
        let mut cfg = SecretConfig::default();
        cfg.reroot(&root);
        (dir, cfg, root)
    }

    #[test]
    fn second_check_finds_the_link_present_even_with_files_missing() {
        let (_dir, cfg, root) = setup(&["token"]);
        let first = ensure(&cfg, &root).unwrap();
        assert_eq!(first.state, SecretState::Linked);
        assert_eq!(first.missing_files, vec!["ca.crt", "namespace"]);
        let second = ensure(&cfg, &root).unwrap();
        assert_eq!(second.state, SecretState::Present, "no restore counted");
    }

    #[test]
    fn a_stale_link_is_replaced() {
        let (dir, cfg, root) = setup(&["token", "ca.crt", "namespace"]);
        let target = resolved_target(&cfg, &root);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        symlink(dir.path().join("gone"), &target).unwrap();
        assert_eq!(ensure(&cfg, &root).unwrap().state, SecretState::Linked);
        assert_eq!(std::fs::read_link(&target).unwrap(), cfg.source);
    }

    #[test]
    fn a_file_on_the_target_is_refused() {
        let (_dir, cfg, root) = setup(&["token", "ca.crt", "namespace"]);
        let target = resolved_target(&cfg, &root);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, "not a dir").unwrap();
        let err = ensure(&cfg, &root).unwrap_err().to_string();
        assert!(err.contains("is a file"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "not a dir");
    }
}
