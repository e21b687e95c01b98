//! Comment-keeping, idempotent edits of Cloudify's `config.yaml`: import-resolver rules,
//! `service_management` and (on first seed) the admin password.
//!
//! After the persist step `/etc/cloudify` is a link into the store, so the file edited is
//! the one the path resolves to (inside `--root`); it is replaced atomically in its own
//! directory, keeping owner and mode, after the result has been re-parsed and checked. The
//! first time the file is changed a backup of the original is kept next to it.

mod edit;

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use edit::{double_quoted, EditError, Rule};

use crate::config::{Context, Root, Secret, Section};

/// `patch:` section of the config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PatchConfig {
    /// Cloudify's config file. A symlink (or a path through a linked directory) is
    /// followed inside `--root` and the file it points to is edited.
    pub config_yaml: PathBuf,
    /// Stop the boot when the file cannot be patched (else: one error line and go on).
    pub required: bool,
    /// Import-resolver rules put first in the rules list, in this order.
    pub rules: Vec<ResolverRule>,
    /// Keys leading to the rules list inside config.yaml.
    pub rules_path: Vec<String>,
    /// Value for the top-level `service_management` key (`supervisord` makes the manager's
    /// starter drive cfy-init's supervisord interface); null leaves the key alone. Set only
    /// where the file already has the key (Cloudify 5.1 and later); releases without it
    /// (4.x, 5.0) only run under systemd, and the boot logs one line saying so.
    pub service_management: Option<String>,
    /// Where the admin password written on first seed comes from, first match wins.
    pub admin_password: PasswordSources,
    /// Suffix of the one-time backup of the original file (same directory).
    pub backup_suffix: String,
}

impl Default for PatchConfig {
    fn default() -> Self {
        Self {
            config_yaml: PathBuf::from("/etc/cloudify/config.yaml"),
            required: false,
            rules: Vec::new(),
            rules_path: ["provider_context", "import_resolver", "parameters", "rules"]
                .map(String::from)
                .to_vec(),
            service_management: Some("supervisord".into()),
            admin_password: PasswordSources::default(),
            backup_suffix: ".cfy-init.orig".into(),
        }
    }
}

/// One import-resolver rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolverRule {
    /// URL prefix matched against imports in blueprints.
    pub prefix: String,
    /// What the prefix is replaced with; must be a `file://` URL.
    pub target_url: String,
}

/// Sources of the admin password, tried in order: environment variable, file, fallback.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordSources {
    /// Environment variable (used when set and non-empty).
    pub env: Option<String>,
    /// File holding the password (trailing newlines dropped; used when non-empty).
    pub file: Option<PathBuf>,
    /// Used when neither of the above gives a password.
    pub fallback: Secret,
    /// Keys leading to the password inside config.yaml.
    pub key_path: Vec<String>,
}

impl Default for PasswordSources {
    fn default() -> Self {
        Self {
            env: Some("CMPASS".into()),
            file: Some(PathBuf::from("/opt/onap/cm-secrets/password")),
            fallback: Secret::new("admin"),
            key_path: ["manager", "security", "admin_password"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl Section for PatchConfig {
    fn reroot(&mut self, root: &Root) {
        root.apply(&mut self.config_yaml);
        if let Some(f) = &mut self.admin_password.file {
            root.apply(f);
        }
    }

    fn validate(&self) -> Result<(), String> {
        for r in &self.rules {
            check_rule(r)?;
        }
        if self.rules_path.is_empty() || self.admin_password.key_path.is_empty() {
            return Err("patch: rules_path and admin_password.key_path must not be empty".into());
        }
        Ok(())
    }
}

fn check_rule(r: &ResolverRule) -> Result<(), String> {
    if !r.target_url.starts_with("file://") {
        return Err(format!(
            "patch.rules: the target of `{}` is `{}`, not a file:// URL (fix patch.rules)",
            r.prefix, r.target_url
        ));
    }
    if r.prefix.is_empty() {
        return Err("patch.rules: a rule has an empty prefix (fix patch.rules)".into());
    }
    Ok(())
}

/// What [`run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchReport {
    /// The file actually edited (the link target), host path.
    pub file: PathBuf,
    /// Rules were added, moved or replaced.
    pub rules_changed: bool,
    /// `service_management` was set.
    pub service_management_changed: bool,
    /// `service_management` is configured but the file has no such key (a release before
    /// 5.1): left alone.
    pub service_management_unsupported: bool,
    /// The one-time backup was written now.
    pub backup_written: bool,
}

/// Errors of the patch step. Every message names the file; none contains the password.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("{}: cannot read Cloudify's config: {source} (check patch.config_yaml, and that the persist step ran)", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}:{line}:{col}: Cloudify's config is not valid YAML: {msg} (fix the file; nothing was changed)", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("{}: {msg} (nothing was changed)", path.display())]
    Layout { path: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    BadRule { path: PathBuf, msg: String },
    #[error("{}: is read-only ({why}); make it writable (chmod u+w, or mount the store read-write)", path.display())]
    ReadOnly { path: PathBuf, why: String },
    #[error("{}: cannot write: {source} (the file was left as it was)", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{}: cannot read the admin password file: {source} (fix its permissions or remove it)", path.display())]
    PasswordFile { path: PathBuf, source: io::Error },
}

impl PatchError {
    fn from_edit(path: &Path, e: EditError) -> PatchError {
        let path = path.to_path_buf();
        match e {
            EditError::Parse { line, col, msg } => PatchError::Parse {
                path,
                line,
                col,
                msg,
            },
            EditError::Layout(msg) | EditError::Verify(msg) => PatchError::Layout { path, msg },
        }
    }
}

/// Apply the configured rules and `service_management` to Cloudify's config.yaml.
pub fn run(ctx: &Context) -> Result<PatchReport, PatchError> {
    let cfg = &ctx.config.patch;
    check_rules(ctx)?;
    let file = target_file(ctx);
    let original = read(&file)?;
    let Edited {
        text,
        rules_changed,
        service_management_changed,
        service_management_unsupported,
    } = edited(&original, cfg).map_err(|e| PatchError::from_edit(&file, e))?;
    if service_management_unsupported {
        tracing::info!(
            file = %file.display(),
            "Cloudify config has no service_management key (a release before 5.1, which runs \
             only under systemd): left alone; patch.service_management applies to 5.1 and later"
        );
    }
    let changed = text != original;
    let backup_written = changed && replace(&file, &original, &text, &cfg.backup_suffix)?;
    tracing::info!(
        file = %file.display(),
        rules = cfg.rules.len(),
        rules_changed,
        service_management_changed,
        "{}",
        if changed { "patched Cloudify config" } else { "Cloudify config already patched" }
    );
    Ok(PatchReport {
        file,
        rules_changed,
        service_management_changed,
        service_management_unsupported,
        backup_written,
    })
}

/// The configured rules must all point at `file://` targets (checked again here because a
/// Context can be built without `Config::load`).
fn check_rules(ctx: &Context) -> Result<(), PatchError> {
    for r in &ctx.config.patch.rules {
        check_rule(r).map_err(|msg| PatchError::BadRule {
            path: ctx
                .config_path
                .clone()
                .unwrap_or_else(|| PathBuf::from("<embedded default>")),
            msg,
        })?;
    }
    Ok(())
}

/// What [`edited`] made of the file.
struct Edited {
    text: String,
    rules_changed: bool,
    service_management_changed: bool,
    service_management_unsupported: bool,
}

/// `original` with the rules and `service_management` applied, and which of them changed.
fn edited(original: &str, cfg: &PatchConfig) -> Result<Edited, EditError> {
    let rules: Vec<Rule> = cfg
        .rules
        .iter()
        .map(|r| Rule {
            prefix: r.prefix.clone(),
            target_url: r.target_url.clone(),
        })
        .collect();
    // Parse even when there is nothing to add, so a broken file is reported.
    let parsed = edit::parse_strict(original)?;
    let mut text = original.to_string();
    let mut rules_changed = false;
    if !rules.is_empty() {
        if let Some(t) = edit::apply_rules(&text, &cfg.rules_path, &rules)? {
            text = t;
            rules_changed = true;
        }
    }
    let mut sm_changed = false;
    let mut sm_unsupported = false;
    if let Some(sm) = &cfg.service_management {
        // The key is in the file of every release that supports it (5.1 and later).
        if parsed.get("service_management").is_none() {
            sm_unsupported = true;
        } else {
            let path = ["service_management".to_string()];
            if let Some(t) = edit::set_scalar(&text, &path, sm, &plain_or_quoted(sm))? {
                text = t;
                sm_changed = true;
            }
        }
    }
    Ok(Edited {
        text,
        rules_changed,
        service_management_changed: sm_changed,
        service_management_unsupported: sm_unsupported,
    })
}

/// Write the admin password from the configured sources into config.yaml
/// (`manager.security.admin_password` by default). Call after persist when the store was
/// seeded for the first time. The password never appears in any log line or error.
pub fn set_admin_password(ctx: &Context) -> Result<(), PatchError> {
    let cfg = &ctx.config.patch;
    let (password, source) = resolve_password(&cfg.admin_password)?;
    let file = target_file(ctx);
    let original = read(&file)?;
    let raw = double_quoted(password.expose());
    let changed = edit::set_scalar(
        &original,
        &cfg.admin_password.key_path,
        password.expose(),
        &raw,
    )
    .map_err(|e| PatchError::from_edit(&file, e))?;
    if let Some(text) = changed {
        replace(&file, &original, &text, &cfg.backup_suffix)?;
    }
    tracing::info!(file = %file.display(), source, "admin password written to Cloudify config");
    Ok(())
}

/// The password and a name for where it came from (for the log; never the value).
pub fn resolve_password(src: &PasswordSources) -> Result<(Secret, &'static str), PatchError> {
    if let Some(var) = &src.env {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return Ok((Secret::new(v.to_string_lossy().into_owned()), "environment"));
        }
    }
    if let Some(path) = &src.file {
        match std::fs::read(path) {
            Ok(bytes) => {
                // Like the legacy `$(cat file)`: trailing newlines are not part of it.
                let s = String::from_utf8_lossy(&bytes);
                let s = s.trim_end_matches(['\n', '\r']);
                if !s.is_empty() {
                    return Ok((Secret::new(s), "file"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(PatchError::PasswordFile {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    Ok((src.fallback.clone(), "fallback"))
}

/// A value that is safe as a plain scalar stays plain (`supervisord`), anything else is
/// double-quoted.
fn plain_or_quoted(s: &str) -> String {
    let plain_ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && serde_norway::from_str::<serde_norway::Value>(s).ok()
            == Some(serde_norway::Value::String(s.into()));
    if plain_ok {
        s.to_string()
    } else {
        double_quoted(s)
    }
}

/// The file to edit: `patch.config_yaml` with symlinks followed inside the root.
fn target_file(ctx: &Context) -> PathBuf {
    crate::secret::resolve_in_root(&ctx.root, &ctx.config.patch.config_yaml)
}

fn read(path: &Path) -> Result<String, PatchError> {
    let bytes = std::fs::read(path).map_err(|source| PatchError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| PatchError::Read {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()),
    })
}

/// Replace `path` with `text` atomically, after making sure the file is still `original`
/// and is writable, and keep a one-time backup of the original. Returns whether the
/// backup was written now.
fn replace(
    path: &Path,
    original: &str,
    text: &str,
    backup_suffix: &str,
) -> Result<bool, PatchError> {
    let meta = std::fs::metadata(path).map_err(|source| PatchError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.permissions().mode() & 0o222 == 0 {
        return Err(PatchError::ReadOnly {
            path: path.to_path_buf(),
            why: format!("mode {:04o}", meta.mode() & 0o7777),
        });
    }
    if read(path)? != original {
        return Err(PatchError::Layout {
            path: path.to_path_buf(),
            msg: "changed by someone else while being patched; run the patch again".into(),
        });
    }
    let write_err = |source: io::Error| {
        if source.raw_os_error() == Some(libc::EROFS) {
            PatchError::ReadOnly {
                path: path.to_path_buf(),
                why: "read-only file system".into(),
            }
        } else {
            PatchError::Write {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let mut backup = path.as_os_str().to_owned();
    backup.push(backup_suffix);
    let backup = PathBuf::from(backup);
    let backup_written = !backup.exists();
    if backup_written {
        crate::fsutil::write_atomic(&backup, original.as_bytes(), meta.mode() & 0o7777)
            .and_then(|()| std::os::unix::fs::chown(&backup, Some(meta.uid()), Some(meta.gid())))
            .map_err(write_err)?;
    }
    crate::fsutil::write_atomic(path, text.as_bytes(), meta.mode() & 0o7777).map_err(write_err)?;
    Ok(backup_written)
}
