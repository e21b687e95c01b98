//! The HTTP control API on a unix socket (and optionally TCP with a bearer token): health,
//! readiness, status, metrics, service control, snapshot and restore; plus its CLI client.
//!
//! Entry point for the boot sequence: [`serve`] (or [`start`], which returns once the
//! listeners are bound). Boot progress is shared through [`BootState`].

mod auth;
pub mod client;
mod client_remote;
mod metrics;
mod routes;
pub mod runtime;
mod server;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{Context, Root, Section};
use crate::supervise::SupervisorHandle;

pub use crate::snapshot::control::{NoServices, ServiceControl};
pub use server::{start, ListenerView, Running};

/// `hooks:` section of the config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// The control socket (HTTP over a unix socket; no token needed, access by file mode).
    pub socket: PathBuf,
    /// Mode of the socket, octal.
    pub socket_mode: String,
    /// Group owning the socket (name or gid); unset = the init's own group.
    pub socket_group: Option<String>,
    /// Optional TCP listener (`host:port`) for probes and the recovery sidecar. Off when unset.
    pub listen: Option<String>,
    /// File holding the bearer token required over TCP for everything but /healthz and
    /// /readyz. Required when `listen` is set.
    pub token_file: Option<PathBuf>,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/cfy-init/control.sock"),
            socket_mode: "0600".into(),
            socket_group: None,
            listen: None,
            token_file: None,
        }
    }
}

impl Section for HooksConfig {
    fn reroot(&mut self, root: &Root) {
        root.apply(&mut self.socket);
        if let Some(t) = &mut self.token_file {
            root.apply(t);
        }
    }

    fn validate(&self) -> Result<(), String> {
        if u32::from_str_radix(&self.socket_mode, 8).is_err() {
            return Err(format!(
                "hooks.socket_mode {:?} is not an octal mode like \"0600\"",
                self.socket_mode
            ));
        }
        if self.listen.is_some() && self.token_file.is_none() {
            return Err("hooks.listen needs hooks.token_file (the bearer token for TCP)".into());
        }
        Ok(())
    }
}

/// Errors starting the API.
#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    #[error("{}: cannot listen: {source}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("hooks.listen {addr}: cannot listen: {source}")]
    Tcp {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot read the bearer token: {reason} (hooks.token_file)", path.display())]
    Token { path: PathBuf, reason: String },
    #[error("hooks.socket_group {0:?}: no such group")]
    Group(String),
}

/// State of one boot step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Running,
    Done,
    Skipped,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootStep {
    pub name: String,
    pub state: StepState,
    pub detail: Option<String>,
    /// Unix seconds.
    pub started: u64,
    pub finished: Option<u64>,
    /// How long it took (fractional seconds), once finished.
    pub seconds: Option<f64>,
    #[serde(skip)]
    began: Option<Instant>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct BootView {
    /// Every boot step before supervision has finished.
    pub complete: bool,
    pub steps: Vec<BootStep>,
    /// The persist step's report, as it serialized it.
    pub persist: Option<serde_json::Value>,
    /// Bytes copied into the store by seeding.
    pub seed_bytes: u64,
    /// Seconds from the start of the boot until every step was done.
    pub seconds: Option<f64>,
    #[serde(skip)]
    began: Option<Instant>,
}

/// Boot progress shared between the boot sequence (writer) and the API (reader).
#[derive(Debug, Clone, Default)]
pub struct BootState(Arc<RwLock<BootView>>);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl BootState {
    pub fn new() -> BootState {
        let s = BootState::default();
        s.0.write().unwrap().began = Some(Instant::now());
        s
    }

    fn set(&self, name: &str, state: StepState, detail: Option<String>) {
        let mut v = self.0.write().unwrap();
        let now = now_secs();
        let finished = (state != StepState::Running).then_some(now);
        let began = Instant::now();
        match v.steps.iter_mut().find(|s| s.name == name) {
            Some(s) => {
                s.state = state;
                s.detail = detail;
                s.finished = finished;
                if state == StepState::Running {
                    s.began = Some(began);
                    s.seconds = None;
                } else {
                    s.seconds = s.began.map(|b| b.elapsed().as_secs_f64());
                }
            }
            None => v.steps.push(BootStep {
                name: name.to_string(),
                state,
                detail,
                started: now,
                finished,
                seconds: (state != StepState::Running).then_some(0.0),
                began: Some(began),
            }),
        }
    }

    pub fn step_running(&self, name: &str) {
        self.set(name, StepState::Running, None)
    }
    pub fn step_done(&self, name: &str, detail: Option<String>) {
        self.set(name, StepState::Done, detail)
    }
    pub fn step_skipped(&self, name: &str, why: &str) {
        self.set(name, StepState::Skipped, Some(why.to_string()))
    }
    pub fn step_failed(&self, name: &str, error: &str) {
        self.set(name, StepState::Failed, Some(error.to_string()))
    }
    /// Keep the persist step's report (any Serialize type) for `/status`.
    pub fn set_persist_report<T: Serialize>(&self, report: &T) {
        self.0.write().unwrap().persist = serde_json::to_value(report).ok();
    }
    pub fn add_seed_bytes(&self, n: u64) {
        self.0.write().unwrap().seed_bytes += n;
    }
    /// Every step before supervision is done: readiness now depends on services only.
    pub fn set_complete(&self) {
        let mut v = self.0.write().unwrap();
        v.complete = true;
        v.seconds = v.began.map(|b| b.elapsed().as_secs_f64());
    }
    pub fn view(&self) -> BootView {
        self.0.read().unwrap().clone()
    }
}

/// Run the API until the process ends (spawn it as a task next to the supervisor).
pub async fn serve(
    ctx: Context,
    handle: SupervisorHandle,
    boot: BootState,
) -> Result<(), HooksError> {
    let running = start(ctx, Arc::new(handle), boot).await?;
    running.wait().await;
    Ok(())
}
