//! supervisord compatibility: reads `supervisord.conf` and its includes into
//! [`crate::supervise::ServiceSpec`]s, and serves supervisord's XML-RPC interface on its
//! unix socket so that `supervisorctl` and Cloudify's own code drive cfy-init unchanged.
//!
//! Parts: [`ini`] (Python's INI dialect), [`values`] (supervisord's value syntaxes),
//! [`conf`] (programs → specs), [`xmlrpc`] (the wire codec), [`rpc`] (the methods and their
//! faults), [`server`] (HTTP on the unix socket, incl. `tail -f`), [`mainlog`] (the init's
//! own log for `readLog` / `maintail`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{Context, Root, Section};
use crate::supervise::{CrashLoop, Readiness, ReadinessCheck, ServiceKind, ServiceSpec};

pub mod conf;
pub mod ini;
pub mod mainlog;
pub mod rpc;
pub mod server;
pub mod values;
pub mod xmlrpc;

pub use conf::ServerSettings;
pub use mainlog::MainLog;
pub use server::serve;

/// `supervisord:` section of the config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisordConfig {
    /// Run the programs of `conf` and serve supervisord's XML-RPC interface. A missing
    /// `conf` file then means "no programs, no socket" rather than an error.
    pub enabled: bool,
    /// supervisord's main config file (host path); `[include] files=` globs are resolved
    /// relative to its directory.
    pub conf: PathBuf,
    /// Socket path (host path) overriding `[unix_http_server] file`.
    pub socket: Option<PathBuf>,
    /// Bytes of the init's own log kept in memory for `readLog` / `supervisorctl maintail`.
    pub main_log_bytes: usize,
    /// Per-program settings that supervisord files cannot express, by program name.
    pub overrides: BTreeMap<String, ProgramOverride>,
}

impl Default for SupervisordConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            conf: PathBuf::from("/etc/supervisord.conf"),
            socket: None,
            main_log_bytes: 1 << 20,
            overrides: BTreeMap::new(),
        }
    }
}

impl Section for SupervisordConfig {
    fn reroot(&mut self, root: &Root) {
        root.apply(&mut self.conf);
        if let Some(s) = &mut self.socket {
            root.apply(s);
        }
        for o in self.overrides.values_mut() {
            o.reroot(root);
        }
    }
}

/// cfy-init settings layered over one supervisord program.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ProgramOverride {
    /// How to tell the program is ready (for cfy-init's readiness endpoint).
    pub readiness: Option<Readiness>,
    /// Failing for good shuts the container down.
    pub required: Option<bool>,
    /// Services that must be ready before this one starts.
    pub depends_on: Option<Vec<String>>,
    /// `longrun`, `oneshot` or `after-ready`.
    pub kind: Option<ServiceKind>,
    /// Give up (FATAL) after this many restarts within a window; supervisord never does.
    pub crash_loop: Option<CrashLoop>,
}

impl ProgramOverride {
    fn reroot(&mut self, root: &Root) {
        if let Some(Readiness {
            check: ReadinessCheck::File { path },
            ..
        }) = &mut self.readiness
        {
            root.apply(path);
        }
    }

    /// Apply to a spec that is already re-rooted (this override is re-rooted too).
    pub fn apply_to(&self, spec: &mut ServiceSpec) {
        if let Some(r) = &self.readiness {
            spec.readiness = r.clone();
        }
        if let Some(r) = self.required {
            spec.required = r;
        }
        if let Some(d) = &self.depends_on {
            spec.depends_on = d.clone();
        }
        if let Some(k) = self.kind {
            spec.kind = k;
        }
        if let Some(c) = &self.crash_loop {
            spec.crash_loop = c.clone();
        }
    }
}

/// Errors reading supervisord files or serving its socket. Each names the file (and line)
/// to fix.
#[derive(Debug, thiserror::Error)]
pub enum SupervisordError {
    #[error("{}: cannot read: {reason} (check supervisord.conf and its [include] files)", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{0} (fix the supervisord file)")]
    Syntax(#[from] ini::IniError),
    #[error("{}:{line}: [{section}] {msg}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        section: String,
        msg: String,
    },
    #[error("{}: cannot serve the supervisord socket: {reason}", path.display())]
    Socket { path: PathBuf, reason: String },
}

/// What [`load`] found: the programs and how to serve the socket.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Programs, re-rooted, overrides applied; give them to the supervisor with
    /// `Origin::Supervisord`.
    /// Shared with the supervisor (one copy of each definition).
    pub programs: Vec<Arc<ServiceSpec>>,
    /// The socket to serve (`None`: no `[unix_http_server]` and no `socket` override).
    pub server: Option<ServerSettings>,
    /// `getIdentification` answer.
    pub identifier: String,
}

/// Read the supervisord files named by the config. Warnings (unknown options, includes that
/// match nothing) are logged with file and line; a missing main file yields nothing.
pub fn load(ctx: &Context) -> Result<Loaded, SupervisordError> {
    let cfg = &ctx.config.supervisord;
    if !cfg.enabled || !cfg.conf.exists() {
        if cfg.enabled {
            tracing::info!(conf = %cfg.conf.display(), "no supervisord config; supervisord interface off");
        }
        return Ok(Loaded {
            programs: Vec::new(),
            server: None,
            identifier: "supervisor".into(),
        });
    }
    let parsed = conf::read(&cfg.conf, &ctx.root, &cfg.overrides)?;
    for w in &parsed.warnings {
        tracing::warn!("{w}");
    }
    let mut server = parsed.server;
    if let Some(socket) = &cfg.socket {
        let s = server.get_or_insert_with(|| ServerSettings {
            socket: socket.clone(),
            chmod: 0o700,
            chown: None,
            username: None,
            password: None,
        });
        s.socket = socket.clone();
    }
    Ok(Loaded {
        programs: parsed.programs.into_iter().map(Arc::new).collect(),
        server,
        identifier: parsed.identifier,
    })
}

/// The directory of a file path (`.` for a bare name).
pub(crate) fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}
