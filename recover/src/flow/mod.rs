//! The recovery itself: [`inspect`] reads the server, its ports, volumes and floating IPs and
//! checks everything that could make the recovery fail half-way (read-only: a bad input is
//! refused before any change), producing a journal; [`Runner`] executes the journal's steps,
//! each of which observes the cloud first and only acts when its effect is missing.
//!
//! Nova-created ports: Neutron shows no "created by" field, and a port Nova created during
//! boot looks like a pre-created one once bound (`device_owner: compute:<az>`, `device_id`
//! the server). What differs is time: Nova creates its ports while the server is in BUILD, so
//! their `created_at` is at or after the server's `created`; a port made in Neutron first and
//! passed by id predates the server. A port with no `created_at` (old Neutron) is treated as
//! Nova-created: refusing is the safe side.
//!
//! | file          | owns                                                                    |
//! |---------------|-------------------------------------------------------------------------|
//! | `mod.rs`      | the types, [`Runner`]: step sequencing, attempt accounting, crash points |
//! | `wait.rs`     | polling long transitions, progress lines, wall and CPU time             |
//! | `snapshot.rs` | the manager's side: snapshot (taken, given, off-host), ready, restore   |
//! | `teardown.rs` | the old server: floating IPs, volume and port detaches, delete          |
//! | `rebuild.rs`  | the replacement: ports, server, attaches, floating IP association       |

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::cloud::models::{Port, Server};
use crate::cloud::{Cloud, CloudError};
use crate::journal::*;
use crate::manager::ManagerError;

mod rebuild;
mod snapshot;
mod teardown;
mod wait;

use wait::cpu_time;
pub(crate) use wait::now_unix_ms;
pub use wait::PROGRESS_EVERY;

pub use crate::plan::inspect;

/// Tag and metadata key that mark a server created by a recovery run.
pub const RUN_TAG_PREFIX: &str = "cfy-recover-";
pub const RUN_METADATA_KEY: &str = "cfy-recover-run";

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Manager(#[from] ManagerError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Bad input or a state we will not touch; nothing was changed.
    #[error("refused: {0}")]
    Refused(String),
    /// Something the recovery cannot safely decide by itself; it stopped.
    #[error("stopped: {0}")]
    Unsafe(String),
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout { what: String, waited: Duration },
}

/// How to get a snapshot.
#[derive(Debug, Clone)]
pub enum SnapshotChoice {
    Auto,
    Take,
    File(PathBuf),
    None,
}

/// Which address of the manager to use when no URL is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AddressChoice {
    Floating,
    Fixed,
}

/// Everything `plan` and `recover` are told.
#[derive(Debug, Clone)]
pub struct Options {
    pub server: String,
    pub snapshot: SnapshotChoice,
    pub accept_new_ip: bool,
    pub manager_url: Option<String>,
    pub manager_port: u16,
    pub manager_address: AddressChoice,
    pub token_file: Option<PathBuf>,
    pub ready_timeout: Duration,
    pub user_data_file: Option<PathBuf>,
    pub os_cloud: Option<String>,
    /// The floating IP to move (default: those bound to the server's ports).
    pub floating_ip: Option<String>,
    /// Where the journal and archives live (also the scratch space of archive verification).
    pub state_dir: PathBuf,
    /// The manager's inventory, used when its server is gone (default: the state
    /// directory's `inventory.json`, when it names this server).
    pub inventory: Option<PathBuf>,
    /// The Swift container of the manager's off-host snapshot copies, restored from when
    /// the manager does not answer (with [`SnapshotChoice::Auto`]).
    pub remote_snapshots: Option<String>,
}

/// Polling of long transitions.
#[derive(Debug, Clone)]
pub struct Waits {
    pub poll: Duration,
    pub timeout: Duration,
    /// How long a detach may take before we go on and let the delete free the resource.
    pub detach_timeout: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Waits {
            poll: Duration::from_secs(2),
            timeout: Duration::from_secs(600),
            detach_timeout: Duration::from_secs(60),
        }
    }
}

/// The result of `plan`: the journal that `recover` would start with, and what was found.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub journal: Journal,
    pub manager_answers: bool,
    pub warnings: Vec<String>,
    pub actions: Vec<String>,
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn new_run_id() -> String {
    format!("{:x}{:06x}", now_unix(), rand::random::<u32>() & 0xff_ffff)
}

/// Is the server's host known to be unusable (so detach would hang)?
pub(crate) fn host_dead(s: &Server) -> bool {
    matches!(s.host_status.as_deref(), Some("DOWN" | "UNKNOWN"))
}

/// Should we detach before deleting: only a healthy server on a live host can do it.
pub(crate) fn can_detach(s: &Server) -> bool {
    matches!(s.status.as_str(), "ACTIVE" | "SHUTOFF") && !host_dead(s)
}

/// See the module comment: a port created at or after the server is Nova's.
pub fn port_created_by_nova(port: &Port, server: &Server) -> bool {
    let parse = |t: &str| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok();
    match (
        port.created_at.as_deref().and_then(parse),
        server.created.as_deref().and_then(parse),
    ) {
        (Some(p), Some(s)) => p >= s,
        _ => true,
    }
}

/// Deterministic crash points for tests: `CFY_RECOVER_CRASH_AT=before:STEP` or
/// `after:STEP` kills the process with SIGKILL there (as `kill -9` would).
fn crash_point(when: &str, step: Step) {
    if let Ok(spec) = std::env::var("CFY_RECOVER_CRASH_AT") {
        if spec == format!("{when}:{}", step.name()) {
            tracing::warn!(step = step.name(), when, "crash point reached: SIGKILL");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// What a step did.
struct Outcome {
    skipped: bool,
    note: String,
}

fn done(note: impl Into<String>) -> Result<Outcome, FlowError> {
    Ok(Outcome {
        skipped: false,
        note: note.into(),
    })
}

fn skipped(note: impl Into<String>) -> Result<Outcome, FlowError> {
    Ok(Outcome {
        skipped: true,
        note: note.into(),
    })
}

/// Executes a journal's steps in order, saving the journal around each.
pub struct Runner<'a> {
    pub cloud: &'a Cloud,
    pub journal: Journal,
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub waits: Waits,
    /// The current step's wait slack (see [`StepRecord::slack_ms`]).
    pub slack: std::cell::Cell<Duration>,
}

impl Runner<'_> {
    fn save(&self) -> Result<(), FlowError> {
        self.journal.save(&self.path).map_err(FlowError::from)
    }

    /// Run every step not done yet. On error the journal says where it stopped and why.
    pub async fn run(&mut self) -> Result<(), FlowError> {
        while let Some(step) = self.journal.next_step() {
            {
                let rec = self.journal.step_mut(step);
                rec.state = StepState::Running;
                rec.attempts += 1;
            }
            self.journal.attempts.push(Attempt {
                step,
                started_at_ms: now_unix_ms(),
                duration_ms: None,
                outcome: String::new(),
            });
            self.save()?;
            tracing::info!(step = step.name(), "step started");
            crash_point("before", step);
            let start = Instant::now();
            let cpu0 = cpu_time();
            self.slack.set(Duration::ZERO);
            let result = self.exec(step).await;
            let ms = start.elapsed().as_millis() as u64;
            let cpu_ms = cpu_time().saturating_sub(cpu0).as_millis() as u64;
            if result.is_ok() {
                crash_point("after", step);
            }
            let slack_ms = self.slack.get().as_millis() as u64;
            if let Some(a) = self.journal.attempts.last_mut() {
                a.duration_ms = Some(ms);
                a.outcome = match &result {
                    Ok(o) if o.skipped => "skipped".into(),
                    Ok(_) => "done".into(),
                    Err(e) => format!("failed: {e}"),
                };
            }
            let rec = self.journal.step_mut(step);
            rec.duration_ms += ms;
            rec.cpu_ms += cpu_ms;
            rec.slack_ms += slack_ms;
            match result {
                Ok(o) => {
                    rec.state = if o.skipped {
                        StepState::Skipped
                    } else {
                        StepState::Done
                    };
                    rec.note = o.note;
                    tracing::info!(step = step.name(), ms, note = %rec.note, "step finished");
                    self.journal.last_error = None;
                    self.save()?;
                }
                Err(e) => {
                    rec.state = StepState::Failed;
                    rec.note = e.to_string();
                    self.journal.last_error = Some(format!("{}: {e}", step.name()));
                    tracing::error!(step = step.name(), error = %e, "step failed");
                    self.save()?;
                    return Err(e);
                }
            }
        }
        self.journal.finished = true;
        self.save()
    }

    async fn exec(&mut self, step: Step) -> Result<Outcome, FlowError> {
        match step {
            Step::Snapshot => self.snapshot().await,
            Step::DisassociateFloatingIp => self.disassociate().await,
            Step::DetachVolumes => self.detach_volumes().await,
            Step::DetachPorts => self.detach_ports().await,
            Step::DeleteServer => self.delete_server().await,
            Step::WaitReleased => self.wait_released().await,
            Step::PreparePorts => self.prepare_ports().await,
            Step::CreateServer => self.create_server().await,
            Step::WaitActive => self.wait_active().await,
            Step::AttachVolumes => self.attach_volumes().await,
            Step::AssociateFloatingIp => self.associate().await,
            Step::WaitReady => self.wait_ready().await,
            Step::Restore => self.restore().await,
            Step::CheckReady => self.check_ready().await,
        }
    }
}

pub use crate::report::report;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server(created: &str) -> Server {
        serde_json::from_value(
            json!({ "id": "s", "name": "n", "status": "ACTIVE", "created": created }),
        )
        .unwrap()
    }

    fn port(created: Option<&str>) -> Port {
        serde_json::from_value(json!({ "id": "p", "network_id": "n", "created_at": created }))
            .unwrap()
    }

    #[test]
    fn nova_port_heuristic() {
        let s = server("2024-05-01T10:00:00Z");
        assert!(
            !port_created_by_nova(&port(Some("2024-05-01T09:59:00Z")), &s),
            "made first"
        );
        assert!(
            port_created_by_nova(&port(Some("2024-05-01T10:00:03Z")), &s),
            "made during boot"
        );
        assert!(
            port_created_by_nova(&port(Some("2024-05-01T10:00:00Z")), &s),
            "same second: unsure, refuse"
        );
        assert!(port_created_by_nova(&port(None), &s), "no evidence: refuse");
    }

    #[test]
    fn detach_only_on_a_live_host() {
        let mut s = server("2024-05-01T10:00:00Z");
        assert!(can_detach(&s));
        s.host_status = Some("DOWN".into());
        assert!(!can_detach(&s));
        s.host_status = Some("UP".into());
        s.status = "ERROR".into();
        assert!(!can_detach(&s));
        s.status = "SHUTOFF".into();
        assert!(can_detach(&s));
    }
}
