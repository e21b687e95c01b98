//! The configuration: one YAML file layered over an embedded default that reproduces the
//! legacy ONAP behaviour, typed with serde, unknown fields rejected with `file:line:col`.
//!
//! Also owns [`Root`], which re-roots every absolute path the binary touches (`--root`), so
//! tests run against a temp dir instead of the real `/`.
//!
//! Layering: the user file is first deserialized on its own (so errors carry its own line and
//! column), then its mappings are merged key by key over the embedded default (lists and
//! scalars replace) and the result is deserialized again.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_norway::Value;

/// The embedded default configuration, one fragment per section so that each module owns
/// its own defaults. Printed whole by `cfy-init config default`.
pub const DEFAULT_FRAGMENTS: &[(&str, &str)] = &[
    ("log", include_str!("defaults/log.yaml")),
    ("persist", include_str!("defaults/persist.yaml")),
    ("secret", include_str!("defaults/secret.yaml")),
    ("patch", include_str!("defaults/patch.yaml")),
    ("supervise", include_str!("defaults/supervise.yaml")),
    ("supervisord", include_str!("defaults/supervisord.yaml")),
    ("hooks", include_str!("defaults/hooks.yaml")),
    ("snapshot", include_str!("defaults/snapshot.yaml")),
];

/// Where the config comes from when neither `--config` nor `CFY_INIT_CONFIG` is given
/// (used only when the file exists).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/cfy-init/config.yaml";

/// The whole embedded default as one YAML document.
pub fn default_yaml() -> String {
    let mut out = String::from(
        "# cfy-init embedded default configuration: reproduces the legacy ONAP start-up.\n",
    );
    for (_, text) in DEFAULT_FRAGMENTS {
        out.push('\n');
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// The complete, typed configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The init's own log output.
    pub log: crate::logging::LogConfig,
    /// Seeding and linking of the persistent store (`/cfy-persist`).
    pub persist: crate::persist::PersistConfig,
    /// The Kubernetes service-account credentials mount.
    pub secret: crate::secret::SecretConfig,
    /// Edits of Cloudify's `config.yaml`.
    pub patch: crate::patch::PatchConfig,
    /// Native service definitions and supervision settings.
    pub supervise: crate::supervise::SuperviseConfig,
    /// supervisord compatibility: program files and the XML-RPC socket.
    pub supervisord: crate::supervisord::SupervisordConfig,
    /// The HTTP control API.
    pub hooks: crate::hooks::HooksConfig,
    /// Snapshot archives of the store.
    pub snapshot: crate::snapshot::SnapshotConfig,
}

/// Behaviour every config section provides.
pub trait Section {
    /// Re-root every host path of this section under `root` (see [`Root::path`]).
    fn reroot(&mut self, root: &Root);
    /// Check cross-field rules that serde cannot express. The message says what to fix.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Config {
    fn sections_mut(&mut self) -> [&mut dyn Section; 8] {
        [
            &mut self.log,
            &mut self.persist,
            &mut self.secret,
            &mut self.patch,
            &mut self.supervise,
            &mut self.supervisord,
            &mut self.hooks,
            &mut self.snapshot,
        ]
    }

    /// The embedded default, not re-rooted.
    pub fn embedded() -> Config {
        from_str(&default_yaml(), Path::new("<embedded default>"))
            .expect("the embedded default config is valid (checked by a test)")
    }

    /// Load the default layered with `file` (when given), validate it and re-root it.
    pub fn load(file: Option<&Path>, root: &Root) -> Result<Config, ConfigError> {
        let (mut config, source) = match file {
            None => (
                serde_json::from_str(DEFAULT_JSON).expect("the embedded default is valid"),
                PathBuf::from("<embedded default>"),
            ),
            Some(file) => (layered(file)?, file.to_path_buf()),
        };
        for section in config.sections_mut() {
            section.validate().map_err(|msg| ConfigError::Invalid {
                path: source.clone(),
                msg,
            })?;
        }
        config.reroot(root);
        Ok(config)
    }

    /// Re-root every host path in the config.
    pub fn reroot(&mut self, root: &Root) {
        for section in self.sections_mut() {
            section.reroot(root);
        }
    }

    /// The effective config as YAML with secrets redacted (see [`Secret`]).
    pub fn to_yaml_redacted(&self) -> String {
        serde_norway::to_string(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// The embedded default as one JSON object, converted from [`DEFAULT_FRAGMENTS`] by build.rs:
/// parsing the YAML at every start was most of the init's start-up CPU time.
const DEFAULT_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/default-config.json"));

/// `file` merged over the embedded default, typed.
fn layered(file: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Read {
        path: file.to_path_buf(),
        reason: e.to_string(),
    })?;
    // Typed parse of the file alone: errors point into the user's own file.
    from_str(&text, file)?;
    let user: Value = serde_norway::from_str(&text).map_err(|e| parse_error(file, e))?;
    let mut merged: Value =
        serde_json::from_str(DEFAULT_JSON).expect("the embedded default is valid JSON");
    merge(&mut merged, user);
    serde_norway::from_value(merged).map_err(|e| parse_error(file, e))
}

impl Section for crate::logging::LogConfig {
    fn reroot(&mut self, _root: &Root) {}
}

/// Deserialize a whole config from text, reporting errors against `path`.
pub fn from_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    serde_norway::from_str(text).map_err(|e| parse_error(path, e))
}

fn parse_error(path: &Path, e: serde_norway::Error) -> ConfigError {
    let (line, col) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // serde_norway appends " at line L column C" to some messages; we print our own.
    let mut msg = e.to_string();
    if let Some(i) = msg.find(" at line ") {
        msg.truncate(i);
    }
    ConfigError::Parse {
        path: path.to_path_buf(),
        line,
        col,
        msg,
    }
}

/// Merge `over` into `base`: mappings merge key by key, everything else replaces.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, Value::Null) if slot.is_mapping() => {} // an empty section keeps the defaults
        (slot, v) => *slot = v,
    }
}

/// Errors while loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {reason} (check --config / CFY_INIT_CONFIG)", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}:{line}:{col}: {msg}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
}

/// The directory that stands for `/` for every absolute path the binary touches
/// (`--root`, default `/`). Paths inside config stay written as on the real system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Default for Root {
    fn default() -> Self {
        Root(PathBuf::from("/"))
    }
}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Root {
        Root(dir.into())
    }

    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// True when this is the real `/` (no re-rooting).
    pub fn is_real(&self) -> bool {
        self.0 == Path::new("/")
    }

    /// `path` re-rooted: `/etc/x` under root `/tmp/r` is `/tmp/r/etc/x`. Relative paths
    /// are returned unchanged.
    pub fn path(&self, path: &Path) -> PathBuf {
        if !path.is_absolute() || self.is_real() {
            return path.to_path_buf();
        }
        let rel: PathBuf = path
            .components()
            .filter(|c| !matches!(c, Component::RootDir))
            .collect();
        self.0.join(rel)
    }

    /// Re-root a path in place.
    pub fn apply(&self, path: &mut PathBuf) {
        *path = self.path(path);
    }

    /// The inverse of [`Root::path`]: the path as seen inside the root, when it is inside.
    pub fn unroot(&self, path: &Path) -> Option<PathBuf> {
        if self.is_real() {
            return Some(path.to_path_buf());
        }
        path.strip_prefix(&self.0)
            .ok()
            .map(|rel| Path::new("/").join(rel))
    }
}

/// A secret string from config (a password or token), never printed: shared with cfy-recover
/// through the `cfy-openstack` crate.
pub use cfy_openstack::Secret;

/// Everything a step needs: the effective config and the root it runs under.
#[derive(Debug, Clone)]
pub struct Context {
    pub config: Config,
    pub root: Root,
    /// The file the config was read from, if any (for messages and SIGHUP reload).
    pub config_path: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::load(None, &Root::default()).unwrap();
        assert_eq!(c.persist.store, PathBuf::from("/cfy-persist"));
    }

    /// The JSON that build.rs embeds says exactly what the YAML fragments say.
    #[test]
    fn embedded_json_matches_the_yaml_fragments() {
        let from_json = Config::load(None, &Root::default()).unwrap();
        let from_yaml = Config::embedded();
        assert_eq!(
            serde_json::to_value(&from_json).unwrap(),
            serde_json::to_value(&from_yaml).unwrap()
        );
        let merged: Value = serde_json::from_str(DEFAULT_JSON).unwrap();
        let yaml: Value = serde_norway::from_str(&default_yaml()).unwrap();
        assert_eq!(merged, yaml);
    }

    #[test]
    fn unknown_field_reports_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "log:\n  level: info\npersist:\n  stroe: /x\n").unwrap();
        let err = Config::load(Some(&f), &Root::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("{}:4:3: ", f.display())), "{err}");
        assert!(err.contains("unknown field `stroe`"), "{err}");
        assert!(
            err.contains("persist: unknown field `stroe`, expected"),
            "{err}"
        );
    }

    #[test]
    fn user_file_overrides_only_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "log:\n  format: json\n").unwrap();
        let c = Config::load(Some(&f), &Root::default()).unwrap();
        assert_eq!(c.log.format, crate::logging::LogFormat::Json);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.persist.store, PathBuf::from("/cfy-persist"));
    }

    #[test]
    fn root_rewrites_absolute_paths_only() {
        let r = Root::new("/tmp/r");
        assert_eq!(r.path(Path::new("/etc/x")), PathBuf::from("/tmp/r/etc/x"));
        assert_eq!(r.path(Path::new("rel/x")), PathBuf::from("rel/x"));
        assert_eq!(
            r.unroot(Path::new("/tmp/r/etc/x")),
            Some(PathBuf::from("/etc/x"))
        );
        assert_eq!(
            Root::default().path(Path::new("/etc/x")),
            PathBuf::from("/etc/x")
        );
    }

    /// Every absolute path left in the effective config after `--root` must lie under the
    /// root; fields listed here hold things that are not host paths of ours.
    #[test]
    fn reroot_covers_every_host_path() {
        const NOT_HOST_PATHS: &[&str] = &["command", "argv", "url", "target_url", "prefix", "env"];
        let mut c = Config::embedded();
        c.reroot(&Root::new("/ROOT"));
        let v = serde_json::to_value(&c).unwrap();
        let mut bad = Vec::new();
        walk(&v, "", &mut bad, NOT_HOST_PATHS);
        assert!(bad.is_empty(), "paths not re-rooted: {bad:?}");

        fn walk(v: &serde_json::Value, at: &str, bad: &mut Vec<String>, skip: &[&str]) {
            match v {
                serde_json::Value::String(s) if s.starts_with('/') && !s.starts_with("/ROOT/") => {
                    bad.push(format!("{at} = {s}"))
                }
                serde_json::Value::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        walk(x, &format!("{at}[{i}]"), bad, skip)
                    }
                }
                serde_json::Value::Object(m) => {
                    for (k, x) in m {
                        if !skip.contains(&k.as_str()) {
                            walk(x, &format!("{at}.{k}"), bad, skip)
                        }
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn secret_is_never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
