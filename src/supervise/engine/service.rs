//! One service's run-time state and how it is reported ([`ServiceInfo`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::AbortHandle;

use crate::supervise::logs::Tails;
use crate::supervise::spawn::Attach;
use crate::supervise::{
    Origin, ProcessState, RestartPolicy, ServiceInfo, ServiceKind, ServiceSpec,
};

/// One service and its run-time state.
pub(crate) struct Service {
    /// Shared with the supervisord interface's program table (one copy per program).
    pub spec: Arc<ServiceSpec>,
    pub origin: Origin,
    pub attach: Attach,
    pub state: ProcessState,
    pub ready: bool,
    pub pid: Option<i32>,
    pub start_time: u64,
    pub stop_time: u64,
    pub(super) started_at: Option<Instant>,
    pub last_exit: Option<i32>,
    /// supervisord's `exitstatus` (see [`ServiceInfo::exitstatus`]); `None` reads as 0.
    pub exitstatus: Option<i32>,
    /// Starts after the service ended without being asked to stop (a crash, an exit, a
    /// changed definition); a start after a requested stop (an operator's stop or restart,
    /// a snapshot's quiesce pause) is not a restart.
    pub restarts: u64,
    /// The last stop was asked for (the next start is not counted as a restart).
    pub(super) stop_requested: bool,
    pub spawn_error: Option<String>,
    /// Why it is in its current state (shown in the description).
    pub note: Option<String>,
    /// Failed start attempts in a row.
    pub(super) attempts: u32,
    /// Restarts within the crash-loop window.
    pub(super) recent: VecDeque<Instant>,
    /// Crashes in a row without becoming ready in between (drives the back-off).
    pub(super) crash_streak: u32,
    /// The supervisor should (re)start it when its dependencies allow.
    pub want_up: bool,
    pub(super) then_start: bool,
    pub(super) replace_with: Option<Arc<ServiceSpec>>,
    pub(super) remove_after_stop: bool,
    pub(super) ever_started: bool,
    pub(super) timer: Option<AbortHandle>,
    pub(super) timer_gen: u64,
    pub(super) probe: Option<AbortHandle>,
    pub(super) probe_gen: u64,
    /// Results of the health checks since the current process started.
    pub(super) health: Health,
    pub tails: Arc<Tails>,
    /// `CFY_INIT_SERVICE` of the current (or last) start: finds its whole process tree.
    pub marker: Option<String>,
}

/// Check results of the current process (reset at each start).
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// The readiness check passed at least once.
    pub passed_once: bool,
    /// Readiness failures / passes in a row.
    pub fails: u32,
    pub passes: u32,
    /// Why the last readiness check failed.
    pub last_error: Option<String>,
    /// Liveness failures in a row, the task, and its generation.
    pub live_fails: u32,
    pub liveness: Option<AbortHandle>,
    pub live_gen: u64,
}

impl Service {
    pub(super) fn new(
        spec: Arc<ServiceSpec>,
        origin: Origin,
        attach: Attach,
        shutting_down: bool,
    ) -> Self {
        Service {
            want_up: spec.autostart && !shutting_down,
            spec,
            origin,
            attach,
            state: ProcessState::Stopped,
            ready: false,
            pid: None,
            start_time: 0,
            stop_time: 0,
            started_at: None,
            last_exit: None,
            exitstatus: None,
            restarts: 0,
            stop_requested: false,
            spawn_error: None,
            note: None,
            attempts: 0,
            recent: VecDeque::new(),
            crash_streak: 0,
            then_start: false,
            replace_with: None,
            remove_after_stop: false,
            ever_started: false,
            timer: None,
            timer_gen: 0,
            probe: None,
            probe_gen: 0,
            health: Health::default(),
            tails: Arc::new(Tails::default()),
            marker: None,
        }
    }

    pub(super) fn is_task(&self) -> bool {
        self.spec.kind != ServiceKind::Longrun
    }

    pub(super) fn cancel_timer(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }

    /// Stop the health checks (readiness and liveness).
    pub(super) fn cancel_probe(&mut self) {
        if let Some(p) = self.probe.take() {
            p.abort();
        }
        if let Some(p) = self.health.liveness.take() {
            p.abort();
        }
    }

    pub fn info(&self) -> ServiceInfo {
        ServiceInfo {
            name: self.spec.name.clone(),
            group: self.spec.group_name().to_string(),
            state: self.state,
            ready: self.ready || self.finished_as_expected(),
            pid: self.pid.map(|p| p as u32),
            start_time: self.start_time,
            stop_time: self.stop_time,
            last_exit_code: self.last_exit,
            exitstatus: self.exitstatus.unwrap_or(0),
            restarts: self.restarts,
            spawn_error: self.spawn_error.clone(),
            description: self.description(),
            reason: self.reason(),
            required: self.spec.required,
            autostart: self.spec.autostart,
            kind: self.spec.kind,
            origin: self.origin,
            log_dropped_lines: self.tails.dropped(),
        }
    }

    /// Exited on purpose and stays down: restart `never` and an expected exit code.
    pub fn finished_as_expected(&self) -> bool {
        self.state == ProcessState::Exited
            && self.spec.restart == RestartPolicy::Never
            && self
                .last_exit
                .is_some_and(|code| self.spec.exit_codes.contains(&code))
    }

    /// Why it is in its state / not ready, for `status` and `/readyz`.
    pub(super) fn reason(&self) -> Option<String> {
        let ready = self.ready || self.finished_as_expected();
        let failing = || {
            self.health.last_error.as_ref().map(|e| {
                format!(
                    "readiness check failed {} time{} in a row: {e}",
                    self.health.fails,
                    if self.health.fails == 1 { "" } else { "s" }
                )
            })
        };
        match self.state {
            ProcessState::Running if ready => None,
            ProcessState::Running | ProcessState::Starting => {
                failing().or_else(|| self.note.clone()).or_else(|| {
                    Some(if self.state == ProcessState::Starting {
                        "starting".to_string()
                    } else {
                        "waiting for its readiness check".to_string()
                    })
                })
            }
            ProcessState::Exited if self.finished_as_expected() || (self.is_task() && ready) => {
                Some(self.note.clone().unwrap_or_else(|| "completed".into()))
            }
            ProcessState::Stopped if !self.ever_started && self.note.is_none() => Some(
                if self.want_up {
                    "not started yet"
                } else {
                    "not started (autostart off)"
                }
                .into(),
            ),
            _ => self
                .note
                .clone()
                .or_else(|| Some(self.state.name().to_lowercase())),
        }
    }

    /// supervisord-style description.
    pub(super) fn description(&self) -> String {
        match (self.state, self.pid) {
            (ProcessState::Running, Some(pid)) | (ProcessState::Stopping, Some(pid)) => {
                let up = self.started_at.map(|t| t.elapsed().as_secs()).unwrap_or(0);
                format!(
                    "pid {pid}, uptime {}:{:02}:{:02}",
                    up / 3600,
                    up / 60 % 60,
                    up % 60
                )
            }
            _ => {
                if let Some(n) = &self.note {
                    n.clone()
                } else if !self.ever_started {
                    "Not started".into()
                } else {
                    String::new()
                }
            }
        }
    }
}
