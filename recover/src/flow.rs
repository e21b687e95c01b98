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

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};

use crate::cloud::models::{Port, Server};
use crate::cloud::{Cloud, CloudError};
use crate::journal::*;
use crate::manager::{self, Manager, ManagerError};

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

/// A wait says what it waits for at least this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// This process's CPU time (user + system) so far.
fn cpu_time() -> Duration {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
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

    /// Poll `probe` until it returns `Some`, or time out.
    async fn wait_for<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: F,
    ) -> Result<T, FlowError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, FlowError>>,
    {
        let start = Instant::now();
        let mut last_line = Instant::now();
        // When the previous probe answered "not yet": the transition ended after it.
        let mut last_no: Option<Instant> = None;
        loop {
            let asked = Instant::now();
            if let Some(v) = probe().await? {
                if let Some(no) = last_no {
                    self.slack
                        .set(self.slack.get() + asked.saturating_duration_since(no));
                }
                return Ok(v);
            }
            last_no = Some(Instant::now());
            if start.elapsed() >= timeout {
                return Err(FlowError::Timeout {
                    what: what.to_owned(),
                    waited: timeout,
                });
            }
            if last_line.elapsed() >= PROGRESS_EVERY {
                last_line = Instant::now();
                tracing::info!(
                    waiting_for = what,
                    elapsed = %humantime::format_duration(Duration::from_secs(start.elapsed().as_secs())),
                    timeout = %humantime::format_duration(timeout),
                    "still waiting"
                );
            }
            tokio::time::sleep(self.waits.poll).await;
        }
    }

    fn manager(&self) -> Result<Manager, FlowError> {
        Ok(Manager::new(
            &self.journal.manager.url,
            self.journal.manager.token_file.as_deref(),
        )?)
    }

    async fn snapshot(&mut self) -> Result<Outcome, FlowError> {
        let snap = self.journal.snapshot.clone();
        if let (Some(path), Some(sha)) = (&snap.path, &snap.sha256) {
            let actual = manager::sha256_file(path).map_err(|e| {
                FlowError::Unsafe(format!(
                    "{}: snapshot archive unreadable: {e}",
                    path.display()
                ))
            })?;
            if &actual != sha {
                return Err(FlowError::Unsafe(format!(
                    "{}: snapshot archive changed since it was verified (sha256 {actual}, expected {sha})",
                    path.display()
                )));
            }
            return done(format!("archive {} verified", path.display()));
        }
        if snap.mode == SnapshotMode::None {
            return skipped("no snapshot requested: the volume alone carries the data");
        }
        let m = self.manager()?;
        if !m.alive().await {
            if snap.mode == SnapshotMode::Required {
                return Err(FlowError::Unsafe(format!(
                    "the manager at {} stopped answering before the snapshot; nothing was changed: pass --snapshot FILE or run without --take-snapshot",
                    m.url
                )));
            }
            if let Some(container) = snap.remote.clone() {
                return self.fetch_remote_snapshot(&m.url, &container).await;
            }
            return skipped(format!(
                "the manager at {} does not answer: recovering with the volume alone",
                m.url
            ));
        }
        let dest = self
            .state_dir
            .join(format!("snapshot-{}.archive", self.journal.run_id));
        let timeout = Duration::from_secs(self.journal.manager.ready_timeout_s);
        let reported = m.take_snapshot(&dest, timeout).await?;
        let info = manager::verify_archive(&dest, &self.state_dir)?;
        if !reported.is_empty() && reported != info.sha256 {
            return Err(FlowError::Unsafe(format!(
                "{}: downloaded archive has sha256 {}, the manager reported {reported}: run resume to download again",
                dest.display(),
                info.sha256
            )));
        }
        self.journal.snapshot.path = Some(dest.clone());
        self.journal.snapshot.sha256 = Some(info.sha256);
        self.save()?;
        done(format!(
            "took snapshot {} ({} bytes, {} entries)",
            dest.display(),
            info.bytes,
            info.entries
        ))
    }

    /// The manager cannot take a snapshot: download its newest off-host copy from Swift
    /// (checked against the sha256 stored at upload), verify it as an archive, and restore
    /// that. No copy at all goes on with the volume alone; a container that cannot be read
    /// stops before any change (the copy may well be there: resume once Swift answers).
    async fn fetch_remote_snapshot(
        &mut self,
        manager_url: &str,
        container: &str,
    ) -> Result<Outcome, FlowError> {
        let unreadable = |e: cfy_openstack::swift::SwiftError| {
            FlowError::Unsafe(format!(
                "the manager at {manager_url} does not answer and its off-host copies in swift://{container} cannot be read: {e}; nothing was changed: run resume once Swift answers, or recover without --remote-snapshots to use the volume alone"
            ))
        };
        let swift = self.cloud.swift().map_err(unreadable)?;
        let Some(newest) = swift.newest_snapshot(container).await.map_err(unreadable)? else {
            return skipped(format!(
                "the manager at {manager_url} does not answer and swift://{container} holds no snapshot: recovering with the volume alone"
            ));
        };
        let dest = self
            .state_dir
            .join(format!("snapshot-{}.archive", self.journal.run_id));
        swift
            .download(container, &newest.name, &dest)
            .await
            .map_err(unreadable)?;
        let info = manager::verify_archive(&dest, &self.state_dir)?;
        self.journal.snapshot.path = Some(dest.clone());
        self.journal.snapshot.sha256 = Some(info.sha256);
        self.save()?;
        done(format!(
            "the manager at {manager_url} does not answer: restoring its newest off-host copy swift://{container}/{} ({} bytes, {} entries)",
            newest.name, info.bytes, info.entries
        ))
    }

    async fn disassociate(&mut self) -> Result<Outcome, FlowError> {
        if self.journal.floating_ips.is_empty() {
            return skipped("no floating IP");
        }
        let mut notes = Vec::new();
        for f in self.journal.floating_ips.clone() {
            let cur = self.cloud.floating_ip(&f.id).await?.ok_or_else(|| {
                FlowError::Unsafe(format!(
                    "floating IP {} ({}) no longer exists",
                    f.address, f.id
                ))
            })?;
            let ours = [Some(f.port_id.as_str()), self.port_target(&f.port_id)];
            match cur.port_id.as_deref() {
                None => notes.push(format!("{} already free", f.address)),
                Some(p) if ours.contains(&Some(p)) => {
                    self.cloud.set_floating_ip_port(&f.id, None, None).await?;
                    notes.push(format!("{} released", f.address));
                }
                Some(p) => {
                    return Err(FlowError::Unsafe(format!(
                    "floating IP {} is now bound to port {p}, not ours: someone else is using it",
                    f.address
                )))
                }
            }
        }
        done(notes.join("; "))
    }

    fn port_target(&self, old_port: &str) -> Option<&str> {
        self.journal
            .ports
            .iter()
            .find(|p| p.id == old_port)
            .and_then(|p| p.target())
    }

    /// The old server when it is still there and able to detach.
    async fn detachable_old_server(&self) -> Result<Result<Server, String>, FlowError> {
        match self.cloud.server(&self.journal.old_server.id).await? {
            None => Ok(Err("old server already gone".into())),
            Some(s) if s.status == "DELETED" => Ok(Err("old server already gone".into())),
            Some(s) if !can_detach(&s) => Ok(Err(format!(
                "server is {} (host {}): Nova cannot detach; the delete frees the resources",
                s.status,
                s.host_status.as_deref().unwrap_or("unknown")
            ))),
            Some(s) => Ok(Ok(s)),
        }
    }

    async fn detach_volumes(&mut self) -> Result<Outcome, FlowError> {
        if self.journal.volumes.is_empty() {
            return skipped("no volume");
        }
        let server = match self.detachable_old_server().await? {
            Err(why) => return skipped(why),
            Ok(s) => s,
        };
        let mut notes = Vec::new();
        for v in self.journal.volumes.clone() {
            let Some(vol) = self.cloud.volume(&v.id).await? else {
                return Err(FlowError::Unsafe(format!(
                    "volume {} no longer exists",
                    v.id
                )));
            };
            if !vol.attached_to().contains(&server.id.as_str()) {
                notes.push(format!("{} already detached", v.id));
                continue;
            }
            match self.cloud.detach_volume(&server.id, &v.id).await {
                Ok(()) => {}
                Err(e) if e.is_conflict() => {
                    notes.push(format!(
                        "{}: detach refused (409), the delete frees it",
                        v.id
                    ));
                    continue;
                }
                // A retried detach meets a volume already on its way: that is success.
                Err(e) => {
                    let now = self.cloud.volume(&v.id).await?;
                    let moving = now
                        .as_ref()
                        .map(|x| matches!(x.status.as_str(), "detaching" | "available"))
                        .unwrap_or(false);
                    if !moving {
                        return Err(e.into());
                    }
                }
            }
            let cloud = self.cloud;
            let id = v.id.clone();
            let waited = self
                .wait_for("volume detach", self.waits.detach_timeout, || async {
                    let vol = cloud.volume(&id).await?;
                    Ok(vol
                        .filter(|v| v.status == "available" && v.attachments.is_empty())
                        .map(|_| ()))
                })
                .await;
            notes.push(match waited {
                Ok(()) => format!("{} detached", v.id),
                Err(FlowError::Timeout { .. }) => {
                    format!("{}: detach did not finish, the delete frees it", v.id)
                }
                Err(e) => return Err(e),
            });
        }
        done(notes.join("; "))
    }

    async fn detach_ports(&mut self) -> Result<Outcome, FlowError> {
        let server = match self.detachable_old_server().await? {
            Err(why) => return skipped(why),
            Ok(s) => s,
        };
        let mut notes = Vec::new();
        for p in self.journal.ports.clone() {
            if p.nova_created {
                notes.push(format!(
                    "{}: Nova's own port, left to die with the server",
                    p.id
                ));
                continue;
            }
            let Some(port) = self.cloud.port(&p.id).await? else {
                return Err(FlowError::Unsafe(format!(
                    "port {} no longer exists: the private IP is lost",
                    p.id
                )));
            };
            if port.device_id != server.id {
                notes.push(format!("{} already detached", p.id));
                continue;
            }
            match self.cloud.detach_interface(&server.id, &p.id).await {
                Ok(()) => {}
                Err(e) if e.is_conflict() => {
                    notes.push(format!(
                        "{}: detach refused (409), the delete unbinds it",
                        p.id
                    ));
                    continue;
                }
                Err(e) => {
                    let unbound = self.cloud.port(&p.id).await?.map(|x| x.is_unbound());
                    if unbound != Some(true) {
                        return Err(e.into());
                    }
                }
            }
            let cloud = self.cloud;
            let id = p.id.clone();
            let waited = self
                .wait_for("port detach", self.waits.detach_timeout, || async {
                    Ok(cloud
                        .port(&id)
                        .await?
                        .filter(|p| p.is_unbound())
                        .map(|_| ()))
                })
                .await;
            notes.push(match waited {
                Ok(()) => format!("{} detached", p.id),
                Err(FlowError::Timeout { .. }) => {
                    format!("{}: detach did not finish, the delete unbinds it", p.id)
                }
                Err(e) => return Err(e),
            });
        }
        done(notes.join("; "))
    }

    async fn delete_server(&mut self) -> Result<Outcome, FlowError> {
        let id = self.journal.old_server.id.clone();
        let cloud = self.cloud;
        let mut deleted_by_us = false;
        let start = Instant::now();
        loop {
            let s = cloud.server(&id).await?;
            match s {
                None => break,
                Some(s) if s.status == "DELETED" => break,
                Some(s) if s.status == "SOFT_DELETED" => {
                    cloud
                        .server_action(&id, json!({ "forceDelete": null }))
                        .await?;
                    deleted_by_us = true;
                }
                Some(s) if s.task_state.as_deref() == Some("deleting") => {}
                Some(_) => match cloud.delete_server(&id).await {
                    Ok(()) => deleted_by_us = true,
                    Err(e) if e.is_conflict() => {
                        tracing::warn!(error = %e, "delete refused for now, retrying");
                    }
                    Err(e) => return Err(e.into()),
                },
            }
            if start.elapsed() > self.waits.timeout {
                return Err(FlowError::Timeout {
                    what: format!("server {id} to be deleted"),
                    waited: self.waits.timeout,
                });
            }
            tokio::time::sleep(self.waits.poll).await;
        }
        done(if deleted_by_us {
            format!("server {id} deleted")
        } else {
            format!("server {id} already gone")
        })
    }

    async fn wait_released(&mut self) -> Result<Outcome, FlowError> {
        let cloud = self.cloud;
        for p in self.journal.ports.clone() {
            if p.nova_created {
                continue;
            }
            let id = p.id.clone();
            self.wait_for(&format!("port {id} to be unbound"), self.waits.timeout, || async {
                match cloud.port(&id).await? {
                    None => Err(FlowError::Unsafe(format!("port {id} was deleted with the server: the private IP is lost; re-run with a new plan and --accept-new-ip"))),
                    Some(p) if p.is_unbound() => Ok(Some(())),
                    Some(_) => Ok(None),
                }
            })
            .await?;
        }
        for v in self.journal.volumes.clone() {
            let id = v.id.clone();
            self.wait_for(&format!("volume {id} to be available"), self.waits.timeout, || async {
                match cloud.volume(&id).await? {
                    None => Err(FlowError::Unsafe(format!("volume {id} no longer exists"))),
                    Some(v) if v.status == "available" && v.attachments.is_empty() => Ok(Some(())),
                    Some(v) if v.status.starts_with("error") => Err(FlowError::Unsafe(format!(
                        "volume {id} is in status {}: fix it in Cinder (e.g. reset its state) and run resume",
                        v.status
                    ))),
                    Some(_) => Ok(None),
                }
            })
            .await?;
        }
        done(format!(
            "{} port(s) unbound, {} volume(s) available",
            self.journal
                .ports
                .iter()
                .filter(|p| !p.nova_created)
                .count(),
            self.journal.volumes.len()
        ))
    }

    fn replacement_port_name(&self, index: usize) -> String {
        format!(
            "{}-port{index}-{}{}",
            self.journal.spec.name, RUN_TAG_PREFIX, self.journal.run_id
        )
    }

    async fn prepare_ports(&mut self) -> Result<Outcome, FlowError> {
        if !self.journal.ports.iter().any(|p| p.nova_created) {
            return skipped("every port survives: nothing to create");
        }
        let mut notes = Vec::new();
        for i in 0..self.journal.ports.len() {
            let p = self.journal.ports[i].clone();
            if !p.nova_created || p.new_id.is_some() {
                continue;
            }
            // The creation-time heuristic may call a pre-created port Nova's: if it
            // survived the delete unbound, it is simply reused.
            if let Some(port) = self.cloud.port(&p.id).await?.filter(|x| x.is_unbound()) {
                notes.push(format!("port {} survived the delete: reused", port.id));
                self.journal.ports[i].new_id = Some(port.id);
                self.save()?;
                continue;
            }
            let name = self.replacement_port_name(i);
            let port = self.create_port_once(&p, &name).await?;
            let ips: Vec<String> = port
                .fixed_ips
                .iter()
                .map(|f| f.ip_address.clone())
                .collect();
            notes.push(format!(
                "port {} ({}) replaces {}",
                port.id,
                ips.join(", "),
                p.id
            ));
            // A manager URL built from the old fixed IP follows the new one.
            if let (Some(old_ip), Some(new_ip)) = (p.fixed_ips.first(), ips.first()) {
                let from = format!("//{}:", old_ip.ip_address);
                let to = format!("//{new_ip}:");
                self.journal.manager.url = self.journal.manager.url.replace(&from, &to);
            }
            self.journal.ports[i].new_id = Some(port.id);
            self.save()?;
        }
        done(notes.join("; "))
    }

    /// Create port `name` unless it exists; ask for the old IP first, then any IP.
    async fn create_port_once(&self, old: &PortRecord, name: &str) -> Result<Port, FlowError> {
        let mut ask_same_ip = true;
        for attempt in 0..self.cloud.policy.attempts {
            if let Some(p) = self.cloud.ports_named(name).await?.into_iter().next() {
                return Ok(p);
            }
            let fixed_ips: Vec<Value> = old
                .fixed_ips
                .iter()
                .map(|f| {
                    if ask_same_ip {
                        json!({ "subnet_id": f.subnet_id, "ip_address": f.ip_address })
                    } else {
                        json!({ "subnet_id": f.subnet_id })
                    }
                })
                .collect();
            let body = json!({ "port": {
                "network_id": old.network_id, "name": name, "fixed_ips": fixed_ips,
                "security_groups": old.security_groups,
            }});
            match self.cloud.create_port(&body).await {
                Ok(p) => return Ok(p),
                Err(e) if (e.is_conflict() || e.status() == Some(400)) && old.keep_ip => {
                    let ips: Vec<&str> = old
                        .fixed_ips
                        .iter()
                        .map(|f| f.ip_address.as_str())
                        .collect();
                    let mut held = Vec::new();
                    for ip in &ips {
                        for p in self.cloud.ports_with_ip(ip).await? {
                            held.push(format!("{ip} by port {} (device {})", p.id, p.device_id));
                        }
                    }
                    return Err(FlowError::Unsafe(format!(
                        "the replacement of port {} must keep {} and Neutron refused it ({e}); held: {}",
                        old.id,
                        ips.join(", "),
                        if held.is_empty() { "none".into() } else { held.join("; ") }
                    )));
                }
                Err(e) if e.is_conflict() || e.status() == Some(400) => {
                    if !ask_same_ip {
                        return Err(e.into());
                    }
                    tracing::warn!(error = %e, "the old IP is not available, asking for any");
                    ask_same_ip = false;
                }
                Err(e) if e.is_transient() => {
                    tokio::time::sleep(self.cloud.policy.delay(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(FlowError::Unsafe(format!("could not create port {name}")))
    }

    fn create_body(&self) -> Result<Value, FlowError> {
        let s = &self.journal.spec;
        let networks: Vec<Value> = self
            .journal
            .ports
            .iter()
            .map(|p| {
                p.target()
                    .map(|id| json!({ "port": id }))
                    .ok_or_else(|| FlowError::Unsafe(format!("no port to replace {}", p.id)))
            })
            .collect::<Result<_, _>>()?;
        let mut server = json!({
            "name": s.name,
            "flavorRef": s.flavor_id,
            "imageRef": s.image_id,
            "metadata": s.metadata,
            "networks": networks,
            "tags": s.tags,
        });
        if !s.security_groups.is_empty() {
            server["security_groups"] = s
                .security_groups
                .iter()
                .map(|n| json!({ "name": n }))
                .collect();
        }
        if let Some(k) = &s.key_name {
            server["key_name"] = json!(k);
        }
        if let Some(u) = &s.user_data {
            server["user_data"] = json!(u);
        }
        if let Some(z) = &s.availability_zone {
            server["availability_zone"] = json!(z);
        }
        Ok(json!({ "server": server }))
    }

    /// The server carrying our tag, if one exists (at most one, or we stop).
    async fn find_ours(&self) -> Result<Option<Server>, FlowError> {
        let mut found = self
            .cloud
            .servers_with_tag(&self.journal.new_server_tag)
            .await?;
        found.retain(|s| s.status != "DELETED");
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => Err(FlowError::Unsafe(format!(
                "{n} servers carry tag {}: delete the extra ones, keep one, and run resume",
                self.journal.new_server_tag
            ))),
        }
    }

    async fn create_server(&mut self) -> Result<Outcome, FlowError> {
        if let Some(id) = self.journal.new_server_id.clone() {
            if self.cloud.server(&id).await?.is_some() {
                return done(format!("server {id} already created"));
            }
            tracing::warn!(server = %id, "the recorded new server is gone; looking for our tag");
            self.journal.new_server_id = None;
            self.save()?;
        }
        let body = self.create_body()?;
        for attempt in 0..self.cloud.policy.attempts {
            if let Some(s) = self.find_ours().await? {
                self.journal.new_server_id = Some(s.id.clone());
                self.save()?;
                return done(format!("found server {} by tag", s.id));
            }
            match self.cloud.create_server(&body).await {
                Ok(id) => {
                    self.journal.new_server_id = Some(id.clone());
                    self.save()?;
                    return done(format!("server {id} created"));
                }
                // Maybe created, maybe not: look for the tag before trying again.
                Err(e) if e.is_transient() || e.is_conflict() => {
                    tracing::warn!(error = %e, "create uncertain, checking by tag");
                    tokio::time::sleep(self.cloud.policy.delay(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(s) = self.find_ours().await? {
            self.journal.new_server_id = Some(s.id.clone());
            self.save()?;
            return done(format!("found server {} by tag", s.id));
        }
        Err(FlowError::Unsafe(
            "Nova did not accept the new server after several tries".into(),
        ))
    }

    fn new_server_id(&self) -> Result<String, FlowError> {
        self.journal
            .new_server_id
            .clone()
            .ok_or_else(|| FlowError::Unsafe("no new server recorded".into()))
    }

    async fn wait_active(&mut self) -> Result<Outcome, FlowError> {
        let mut id = self.new_server_id()?;
        if self.cloud.server(&id).await?.is_none() {
            // Deleted after it failed (the operator's fix): boot the replacement again.
            tracing::warn!(server = %id, "the new server is gone: creating it again");
            self.create_server().await?;
            id = self.new_server_id()?;
        }
        let cloud = self.cloud;
        self.wait_for(&format!("server {id} to become ACTIVE"), self.waits.timeout, || async {
            match cloud.server(&id).await? {
                None => Err(FlowError::Unsafe(format!("new server {id} disappeared; run resume to boot it again"))),
                Some(s) if s.status == "ACTIVE" => Ok(Some(())),
                Some(s) if s.status == "ERROR" => Err(FlowError::Unsafe(format!(
                    "new server {id} went to ERROR ({}); it was left in place for inspection: delete it and run resume to boot another",
                    s.fault.and_then(|f| f.message).unwrap_or_else(|| "no fault message".into())
                ))),
                Some(_) => Ok(None),
            }
        })
        .await?;
        done(format!("server {id} ACTIVE"))
    }

    async fn attach_volumes(&mut self) -> Result<Outcome, FlowError> {
        if self.journal.volumes.is_empty() {
            return skipped("no volume");
        }
        let server = self.new_server_id()?;
        let cloud = self.cloud;
        let mut notes = Vec::new();
        for v in self.journal.volumes.clone() {
            let id = v.id.clone();
            let mut attempt = 0;
            loop {
                let vol = cloud
                    .volume(&id)
                    .await?
                    .ok_or_else(|| FlowError::Unsafe(format!("volume {id} no longer exists")))?;
                let holders = vol.attached_to();
                if holders.contains(&server.as_str()) {
                    break;
                }
                if let Some(other) = holders.first() {
                    return Err(FlowError::Unsafe(format!(
                        "volume {id} got attached to {other} meanwhile: detach it there and run resume"
                    )));
                }
                if vol.status == "available" {
                    match cloud.attach_volume(&server, &id).await {
                        Ok(()) => break,
                        Err(e) if e.is_transient() || e.is_conflict() => {
                            tracing::warn!(error = %e, "attach uncertain, checking the volume");
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                attempt += 1;
                if attempt >= cloud.policy.attempts * 4 {
                    return Err(FlowError::Unsafe(format!(
                        "volume {id} stays {} and cannot be attached",
                        vol.status
                    )));
                }
                tokio::time::sleep(self.waits.poll.max(cloud.policy.delay(attempt.min(3)))).await;
            }
            let sid = server.clone();
            self.wait_for(
                &format!("volume {id} to be in-use"),
                self.waits.timeout,
                || async {
                    Ok(cloud
                        .volume(&id)
                        .await?
                        .filter(|v| v.status == "in-use" && v.attached_to().contains(&sid.as_str()))
                        .map(|_| ()))
                },
            )
            .await?;
            notes.push(format!("{id} in-use"));
        }
        done(notes.join("; "))
    }

    async fn associate(&mut self) -> Result<Outcome, FlowError> {
        if self.journal.floating_ips.is_empty() {
            return skipped("no floating IP");
        }
        let cloud = self.cloud;
        let mut notes = Vec::new();
        for f in self.journal.floating_ips.clone() {
            let old = self.journal.ports.iter().find(|p| p.id == f.port_id);
            let target = self
                .port_target(&f.port_id)
                .map(str::to_owned)
                .ok_or_else(|| {
                    FlowError::Unsafe(format!("no port for floating IP {}", f.address))
                })?;
            let fixed = old.filter(|p| !p.nova_created).and(f.fixed_ip.clone());
            let cur = cloud.floating_ip(&f.id).await?.ok_or_else(|| {
                FlowError::Unsafe(format!(
                    "floating IP {} ({}) no longer exists",
                    f.address, f.id
                ))
            })?;
            match cur.port_id.as_deref() {
                Some(p) if p == target => {}
                None => {
                    cloud
                        .set_floating_ip_port(&f.id, Some(&target), fixed.as_deref())
                        .await?;
                }
                Some(p) => {
                    return Err(FlowError::Unsafe(format!(
                        "floating IP {} got bound to port {p} meanwhile: free it and run resume",
                        f.address
                    )))
                }
            }
            let id = f.id.clone();
            // The data plane (status ACTIVE) is waited for only when the manager is reached
            // through this address; otherwise Neutron's binding is what the recovery needs
            // (a cloud without an L3 agent on the router never shows ACTIVE).
            let via_this = self
                .journal
                .manager
                .url
                .contains(&format!("//{}:", f.address));
            let want_active = via_this;
            let status = self
                .wait_for(
                    &format!(
                        "floating IP {} to be {}",
                        f.address,
                        if want_active {
                            "ACTIVE"
                        } else {
                            "bound to the port"
                        }
                    ),
                    self.waits.timeout,
                    || async {
                        Ok(cloud.floating_ip(&id).await?.and_then(|f| {
                            let bound = f.port_id.as_deref() == Some(target.as_str());
                            (bound && (!want_active || f.status == "ACTIVE")).then_some(f.status)
                        }))
                    },
                )
                .await?;
            notes.push(format!("{} → port {target} ({status})", f.address));
        }
        done(notes.join("; "))
    }

    /// The manager URL: the journal's, with the fixed IP refreshed when the port was replaced.
    fn manager_after(&self) -> Result<Manager, FlowError> {
        self.manager()
    }

    async fn wait_ready(&mut self) -> Result<Outcome, FlowError> {
        let m = self.manager_after()?;
        m.wait_ready(Duration::from_secs(self.journal.manager.ready_timeout_s))
            .await?;
        done(format!("{} ready", m.url))
    }

    async fn restore(&mut self) -> Result<Outcome, FlowError> {
        let Some(path) = self.journal.snapshot.path.clone() else {
            return skipped("no snapshot: the volume alone carries the data");
        };
        let sha = self.journal.snapshot.sha256.clone().unwrap_or_default();
        {
            let actual = manager::sha256_file(&path).map_err(|e| {
                FlowError::Unsafe(format!(
                    "{}: snapshot archive unreadable: {e}",
                    path.display()
                ))
            })?;
            if actual != sha {
                return Err(FlowError::Unsafe(format!(
                    "{}: snapshot archive changed since it was verified",
                    path.display()
                )));
            }
        }
        let m = self.manager_after()?;
        let timeout = Duration::from_secs(self.journal.manager.ready_timeout_s);
        m.restore(&path, &sha, timeout).await?;
        done(format!("restored {}", path.display()))
    }

    async fn check_ready(&mut self) -> Result<Outcome, FlowError> {
        let m = self.manager_after()?;
        m.wait_ready(Duration::from_secs(self.journal.manager.ready_timeout_s))
            .await?;
        done(format!("{} ready after restore", m.url))
    }
}

pub use crate::report::report;

#[cfg(test)]
mod tests {
    use super::*;

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
