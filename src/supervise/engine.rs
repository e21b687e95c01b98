//! The supervisor's event loop: one task owns every state transition. Exits (from the
//! reaper), timers, probe results, signals and commands from [`super::SupervisorHandle`]
//! all arrive as [`Msg`]s on one channel; after each message the loop starts whatever has
//! become startable, advances an ordered shutdown, and tells waiters that state changed.
//!
//! Timers exist only while something is pending (start-up grace, back-off, stop timeout,
//! probes, the shutdown deadline), so an idle supervisor sleeps without wake-ups.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use super::logs::{self, Sink, Tails};
use super::spawn::{self, Attach};
use super::{
    ForwardSignals, Origin, ProcessState, ReadinessCheck, RestartPolicy, ServiceInfo, ServiceKind,
    ServiceSpec, Stream, SuperviseConfig, SuperviseError, UpdateReport,
};
use crate::pid1::{self, exit_code, kill_group, kill_pid};

type Reply<T = ()> = oneshot::Sender<Result<T, SuperviseError>>;

/// Everything the event loop reacts to.
pub(crate) enum Msg {
    Start(String, Reply),
    Stop(String, Reply),
    Signal(String, i32, Reply),
    Add(Box<ServiceSpec>, Origin, Reply),
    Remove(String, Reply),
    Apply(Vec<ServiceSpec>, Origin, oneshot::Sender<UpdateReport>),
    Exit {
        name: String,
        pid: i32,
        status: i32,
    },
    Timer {
        name: String,
        gen: u64,
    },
    Probe {
        name: String,
        gen: u64,
        ok: bool,
    },
    /// Begin a graceful shutdown; `Some(sig)`: the signal that asked for it.
    Shutdown(Option<i32>),
    Forward(i32),
    Deadline,
}

/// State shared between the event loop and every handle.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub tx: mpsc::UnboundedSender<Msg>,
    /// Bumped after every message; waiters watch it.
    pub changed: watch::Sender<u64>,
    pub shutting_down: AtomicBool,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One service and its run-time state.
pub(crate) struct Service {
    pub spec: ServiceSpec,
    pub origin: Origin,
    pub attach: Attach,
    pub state: ProcessState,
    pub ready: bool,
    pub pid: Option<i32>,
    pub start_time: u64,
    pub stop_time: u64,
    started_at: Option<Instant>,
    pub last_exit: Option<i32>,
    /// Starts after the service ended without being asked to stop (a crash, an exit, a
    /// changed definition); a start after a requested stop (an operator's stop or restart,
    /// a snapshot's quiesce pause) is not a restart.
    pub restarts: u64,
    /// The last stop was asked for (the next start is not counted as a restart).
    stop_requested: bool,
    pub spawn_error: Option<String>,
    /// Why it is in its current state (shown in the description).
    pub note: Option<String>,
    /// Failed start attempts in a row.
    attempts: u32,
    /// Restarts within the crash-loop window.
    recent: VecDeque<Instant>,
    /// Crashes in a row without becoming ready in between (drives the back-off).
    crash_streak: u32,
    /// The supervisor should (re)start it when its dependencies allow.
    pub want_up: bool,
    then_start: bool,
    replace_with: Option<ServiceSpec>,
    remove_after_stop: bool,
    ever_started: bool,
    timer: Option<AbortHandle>,
    timer_gen: u64,
    probe: Option<AbortHandle>,
    probe_gen: u64,
    pub tails: Arc<Tails>,
}

impl Service {
    fn new(spec: ServiceSpec, origin: Origin, attach: Attach, shutting_down: bool) -> Self {
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
            tails: Arc::new(Tails::default()),
        }
    }

    fn is_task(&self) -> bool {
        self.spec.kind != ServiceKind::Longrun
    }

    fn cancel_timer(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }

    fn cancel_probe(&mut self) {
        if let Some(p) = self.probe.take() {
            p.abort();
        }
    }

    pub fn info(&self) -> ServiceInfo {
        ServiceInfo {
            name: self.spec.name.clone(),
            group: self.spec.group_name().to_string(),
            state: self.state,
            ready: self.ready,
            pid: self.pid.map(|p| p as u32),
            start_time: self.start_time,
            stop_time: self.stop_time,
            last_exit_code: self.last_exit,
            restarts: self.restarts,
            spawn_error: self.spawn_error.clone(),
            description: self.description(),
            required: self.spec.required,
            kind: self.spec.kind,
            origin: self.origin,
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

    /// supervisord-style description.
    fn description(&self) -> String {
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

/// All services and the supervisor-wide state.
pub(crate) struct State {
    pub services: BTreeMap<String, Service>,
    /// Names in start order (reverse: stop order).
    pub order: Vec<String>,
    tx: mpsc::UnboundedSender<Msg>,
    shutdown: Option<Shutdown>,
    pub required_failed: Vec<String>,
    /// The `run -- CMD` service, its exit code, or the code for a failed spawn.
    pub main: Option<String>,
    pub main_exit: Option<i32>,
    forward: ForwardSignals,
    deadline: Duration,
    next_gen: u64,
}

struct Shutdown {
    signal: Option<i32>,
    killed: bool,
    gave_up: bool,
}

/// Create the shared state and the receiving end of its event channel.
pub(crate) fn new(config: &SuperviseConfig) -> (Arc<Shared>, mpsc::UnboundedReceiver<Msg>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = State {
        services: BTreeMap::new(),
        order: Vec::new(),
        tx: tx.clone(),
        shutdown: None,
        required_failed: Vec::new(),
        main: None,
        main_exit: None,
        forward: config.forward_signals,
        deadline: config.shutdown_deadline,
        next_gen: 1,
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        tx,
        changed: watch::channel(0).0,
        shutting_down: AtomicBool::new(false),
    });
    (shared, rx)
}

/// Run the event loop until a shutdown has completed.
pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let finished = {
        let mut st = shared.lock();
        st.tick();
        st.finished()
    };
    shared.changed.send_modify(|v| *v += 1);
    if finished {
        return;
    }
    // Start-up (config parsing, runtime set-up) freed most of what it allocated: give those
    // pages back so the long-lived init stays small.
    // SAFETY: glibc call without pointer arguments.
    unsafe { libc::malloc_trim(0) };
    while let Some(msg) = rx.recv().await {
        let finished = {
            let mut st = shared.lock();
            if matches!(msg, Msg::Shutdown(_)) {
                shared.shutting_down.store(true, Ordering::SeqCst);
            }
            st.handle(msg);
            st.tick();
            if st.shutdown.is_some() {
                shared.shutting_down.store(true, Ordering::SeqCst);
            }
            st.finished()
        };
        shared.changed.send_modify(|v| *v += 1);
        if finished {
            break;
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn backoff_delay(spec: &ServiceSpec, n: u32) -> Duration {
    let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
    spec.backoff
        .initial
        .checked_mul(factor)
        .unwrap_or(spec.backoff.max)
        .min(spec.backoff.max)
}

impl State {
    /// Add a service (config time or at run time).
    pub fn insert(&mut self, spec: ServiceSpec, origin: Origin, attach: Attach) {
        let svc = Service::new(spec, origin, attach, self.shutdown.is_some());
        self.services.insert(svc.spec.name.clone(), svc);
        self.reorder();
    }

    fn reorder(&mut self) {
        self.order = super::order::start_order(self.services.values().map(|s| &s.spec));
    }

    pub fn finished(&self) -> bool {
        match &self.shutdown {
            Some(s) => s.gave_up || self.services.values().all(|s| s.pid.is_none()),
            None => false,
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// Exit code of the whole init once finished.
    pub fn exit_code(&self) -> i32 {
        if self.main.is_some() {
            return self.main_exit.unwrap_or(1);
        }
        if self.required_failed.is_empty() {
            0
        } else {
            1
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Start(name, reply) => {
                let _ = reply.send(self.cmd_start(&name));
            }
            Msg::Stop(name, reply) => {
                let _ = reply.send(self.cmd_stop(&name));
            }
            Msg::Signal(name, sig, reply) => {
                let _ = reply.send(self.cmd_signal(&name, sig));
            }
            Msg::Add(spec, origin, reply) => {
                let _ = reply.send(self.cmd_add(*spec, origin));
            }
            Msg::Remove(name, reply) => {
                let _ = reply.send(self.cmd_remove(&name));
            }
            Msg::Apply(specs, origin, reply) => {
                let _ = reply.send(self.cmd_apply(specs, origin));
            }
            Msg::Exit { name, pid, status } => self.on_exit(&name, pid, status),
            Msg::Timer { name, gen } => self.on_timer(&name, gen),
            Msg::Probe { name, gen, ok } => self.on_probe(&name, gen, ok),
            Msg::Shutdown(sig) => self.begin_shutdown(sig),
            Msg::Forward(sig) => self.forward(sig),
            Msg::Deadline => self.on_deadline(),
        }
    }

    fn svc(&mut self, name: &str) -> Result<&mut Service, SuperviseError> {
        self.services
            .get_mut(name)
            .ok_or_else(|| SuperviseError::BadName(name.to_string()))
    }

    fn cmd_start(&mut self, name: &str) -> Result<(), SuperviseError> {
        if self.shutdown.is_some() {
            return Err(SuperviseError::ShuttingDown);
        }
        let svc = self.svc(name)?;
        let busy = svc.pid.is_some() || svc.state == ProcessState::Backoff;
        if busy || svc.want_up {
            return Err(SuperviseError::AlreadyStarted(name.to_string()));
        }
        svc.want_up = true;
        // An explicit start revives a FATAL or EXITED service (as supervisord's `start` does).
        if matches!(svc.state, ProcessState::Fatal | ProcessState::Exited) {
            svc.state = ProcessState::Stopped;
        }
        svc.attempts = 0;
        svc.recent.clear();
        svc.note = None;
        svc.spawn_error = None;
        svc.ready = false;
        Ok(())
    }

    fn cmd_stop(&mut self, name: &str) -> Result<(), SuperviseError> {
        let svc = self.svc(name)?;
        let waiting = svc.want_up && svc.pid.is_none();
        svc.want_up = false;
        svc.then_start = false;
        svc.stop_requested = true;
        if svc.pid.is_some() {
            if svc.state != ProcessState::Stopping {
                self.begin_stop(name);
            }
            Ok(())
        } else if svc.state == ProcessState::Backoff || waiting {
            svc.cancel_timer();
            svc.state = ProcessState::Stopped;
            svc.note = None;
            Ok(())
        } else {
            Err(SuperviseError::NotRunning(name.to_string()))
        }
    }

    fn cmd_signal(&mut self, name: &str, sig: i32) -> Result<(), SuperviseError> {
        let svc = self.svc(name)?;
        match svc.pid {
            Some(pid) => {
                kill_pid(pid, sig);
                Ok(())
            }
            None => Err(SuperviseError::NotRunning(name.to_string())),
        }
    }

    fn cmd_add(&mut self, spec: ServiceSpec, origin: Origin) -> Result<(), SuperviseError> {
        if self.services.contains_key(&spec.name) {
            return Err(SuperviseError::BadArguments(format!(
                "{} already exists",
                spec.name
            )));
        }
        if spec.command.is_empty() {
            return Err(SuperviseError::BadArguments(format!(
                "{} has an empty command",
                spec.name
            )));
        }
        tracing::info!(service = %spec.name, "added");
        self.insert(spec, origin, Attach::Service);
        Ok(())
    }

    fn cmd_remove(&mut self, name: &str) -> Result<(), SuperviseError> {
        let svc = self.svc(name)?;
        if svc.pid.is_some() || svc.state == ProcessState::Backoff {
            return Err(SuperviseError::AlreadyStarted(name.to_string()));
        }
        self.services.remove(name);
        self.reorder();
        tracing::info!(service = name, "removed");
        Ok(())
    }

    fn cmd_apply(&mut self, specs: Vec<ServiceSpec>, origin: Origin) -> UpdateReport {
        let mut report = UpdateReport::default();
        let new_names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        for spec in specs {
            let name = spec.name.clone();
            match self.services.get_mut(&name) {
                None => {
                    self.insert(spec, origin, Attach::Service);
                    report.added.push(name);
                }
                Some(svc) if svc.origin != origin => {
                    tracing::warn!(service = %name, "defined by another source; ignored");
                }
                Some(svc) if svc.spec == spec => {}
                Some(svc) => {
                    report.changed.push(name.clone());
                    if svc.pid.is_some() {
                        svc.replace_with = Some(spec);
                        svc.then_start = true;
                        svc.want_up = false;
                        self.begin_stop(&name);
                    } else {
                        svc.cancel_timer();
                        if matches!(svc.state, ProcessState::Backoff | ProcessState::Fatal) {
                            svc.state = ProcessState::Stopped;
                            svc.attempts = 0;
                        }
                        svc.want_up = spec.autostart || svc.want_up;
                        svc.spec = spec;
                        self.reorder();
                    }
                }
            }
        }
        let removed: Vec<String> = self
            .services
            .values()
            .filter(|s| {
                s.origin == origin && !new_names.contains(&s.spec.name) && !s.remove_after_stop
            })
            .map(|s| s.spec.name.clone())
            .collect();
        for name in removed {
            let svc = self.services.get_mut(&name).expect("listed above");
            svc.want_up = false;
            if svc.pid.is_some() {
                svc.remove_after_stop = true;
                self.begin_stop(&name);
            } else {
                svc.cancel_timer();
                self.services.remove(&name);
                self.reorder();
            }
            report.removed.push(name);
        }
        if !(report.added.is_empty() && report.changed.is_empty() && report.removed.is_empty()) {
            tracing::info!(
                added = ?report.added,
                changed = ?report.changed,
                removed = ?report.removed,
                "service definitions applied"
            );
        }
        report
    }

    /// Start everything that wants to run and whose dependencies are satisfied; during
    /// shutdown, stop whatever may stop now.
    fn tick(&mut self) {
        if self.shutdown.is_some() {
            self.shutdown_step();
            return;
        }
        loop {
            let mut progressed = false;
            for name in self.order.clone() {
                let svc = &self.services[&name];
                let launchable = svc.want_up
                    && svc.pid.is_none()
                    && !matches!(svc.state, ProcessState::Backoff | ProcessState::Fatal);
                if !launchable {
                    continue;
                }
                let waiting_for = self.unmet_dependencies(&name);
                if waiting_for.is_empty() {
                    progressed |= self.launch(&name);
                    if self.shutdown.is_some() {
                        return self.shutdown_step();
                    }
                } else {
                    let svc = self.services.get_mut(&name).expect("in order");
                    svc.note = Some(format!("Waiting for {}", waiting_for.join(", ")));
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// Dependencies not yet ready (or missing). An after-ready task with no explicit
    /// dependencies waits for every autostart long-running service.
    fn unmet_dependencies(&self, name: &str) -> Vec<String> {
        let svc = &self.services[name];
        let deps: Vec<&String> =
            if svc.spec.kind == ServiceKind::AfterReady && svc.spec.depends_on.is_empty() {
                self.services
                    .values()
                    .filter(|s| !s.is_task() && s.spec.autostart)
                    .map(|s| &s.spec.name)
                    .collect()
            } else {
                svc.spec.depends_on.iter().collect()
            };
        deps.into_iter()
            .filter(|d| *d != name && !self.services.get(*d).is_some_and(|s| s.ready))
            .cloned()
            .collect()
    }

    fn gen(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    /// Spawn a service now. True when it became ready at once (a skipped task).
    fn launch(&mut self, name: &str) -> bool {
        let gen = self.gen();
        let tx = self.tx.clone();
        let svc = self
            .services
            .get_mut(name)
            .expect("launch of a known service");
        if svc.spec.kind == ServiceKind::AfterReady {
            if let Some(marker) = svc.spec.marker.as_ref().filter(|m| m.exists()) {
                tracing::info!(service = name, marker = %marker.display(), "already done once; skipped");
                svc.state = ProcessState::Exited;
                svc.ready = true;
                svc.want_up = false;
                svc.note = Some(format!("Skipped: {} exists", marker.display()));
                return true;
            }
        }
        let claim_name = name.to_string();
        let on_exit: pid1::Claim = Box::new(move |pid, status| {
            let _ = tx.send(Msg::Exit {
                name: claim_name,
                pid,
                status,
            });
        });
        if svc.ever_started && !svc.stop_requested {
            svc.restarts += 1;
        }
        svc.stop_requested = false;
        svc.ever_started = true;
        svc.start_time = now_unix();
        svc.ready = false;
        svc.note = None;
        match spawn::spawn(&svc.spec, svc.attach, on_exit) {
            Ok(sp) => {
                tracing::info!(service = name, pid = sp.pid, "started");
                svc.pid = Some(sp.pid);
                svc.spawn_error = None;
                svc.state = ProcessState::Starting;
                svc.started_at = Some(Instant::now());
                let label: Arc<str> = Arc::from(name);
                for (fd, stream, target) in [
                    (sp.stdout, Stream::Stdout, &svc.spec.stdout),
                    (sp.stderr, Stream::Stderr, &svc.spec.stderr),
                ] {
                    if let Some(fd) = fd {
                        tokio::spawn(logs::pump(
                            label.clone(),
                            stream,
                            fd,
                            Sink::for_target(target),
                            svc.tails.clone(),
                        ));
                    }
                }
                if svc.spec.readiness.check != ReadinessCheck::Started {
                    self.start_probe(name, gen);
                }
                let svc = self.services.get_mut(name).expect("still there");
                if svc.spec.startsecs.is_zero() {
                    self.enter_running(name);
                } else {
                    let d = svc.spec.startsecs;
                    self.schedule(name, d);
                }
                false
            }
            Err(reason) => {
                tracing::error!(service = name, "cannot start: {reason}");
                svc.spawn_error = Some(reason.clone());
                svc.stop_time = now_unix();
                if svc.attach == Attach::Foreground {
                    self.main_exit = Some(if reason.starts_with("can't find") {
                        127
                    } else {
                        126
                    });
                }
                self.failed_attempt(name, reason);
                false
            }
        }
    }

    fn start_probe(&mut self, name: &str, gen: u64) {
        let tx = self.tx.clone();
        let svc = self.services.get_mut(name).expect("known");
        svc.cancel_probe();
        svc.probe_gen = gen;
        let readiness = svc.spec.readiness.clone();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            let ok = super::readiness::wait_ready(readiness).await;
            let _ = tx.send(Msg::Probe { name, gen, ok });
        });
        svc.probe = Some(task.abort_handle());
    }

    /// Arm the service's one timer (start-up grace, back-off or stop timeout).
    fn schedule(&mut self, name: &str, after: Duration) {
        let gen = self.gen();
        let tx = self.tx.clone();
        let svc = self.services.get_mut(name).expect("known");
        svc.cancel_timer();
        svc.timer_gen = gen;
        let name = name.to_string();
        let task = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Msg::Timer { name, gen });
        });
        svc.timer = Some(task.abort_handle());
    }

    fn enter_running(&mut self, name: &str) {
        let svc = self.services.get_mut(name).expect("known");
        svc.cancel_timer();
        svc.state = ProcessState::Running;
        svc.attempts = 0;
        svc.note = None;
        if svc.spec.readiness.check == ReadinessCheck::Started && !svc.is_task() {
            svc.ready = true;
            tracing::info!(service = name, "running and ready");
        } else {
            tracing::info!(service = name, "running");
        }
    }

    fn on_timer(&mut self, name: &str, gen: u64) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.timer_gen != gen {
            return;
        }
        svc.timer = None;
        match svc.state {
            ProcessState::Starting if svc.pid.is_some() => self.enter_running(name),
            ProcessState::Backoff => {
                svc.state = ProcessState::Stopped;
                // tick() relaunches it once its dependencies allow.
            }
            ProcessState::Stopping => {
                if let Some(pid) = svc.pid {
                    tracing::warn!(
                        service = name,
                        "did not stop within {:?}; killing its process group",
                        svc.spec.stop_timeout
                    );
                    kill_group(pid, libc::SIGKILL);
                    kill_pid(pid, libc::SIGKILL);
                }
            }
            _ => {}
        }
    }

    fn on_probe(&mut self, name: &str, gen: u64, ok: bool) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.probe_gen != gen || svc.pid.is_none() {
            return;
        }
        svc.probe = None;
        if ok {
            svc.ready = true;
            tracing::info!(service = name, "ready");
            if svc.state == ProcessState::Starting {
                self.enter_running(name);
            }
        } else if let Some(pid) = svc.pid {
            tracing::warn!(service = name, "readiness check failed; killing it");
            svc.note = Some("Readiness check failed".into());
            // Counted as a failed start when its exit arrives.
            svc.state = ProcessState::Starting;
            svc.cancel_timer();
            kill_group(pid, libc::SIGKILL);
            kill_pid(pid, libc::SIGKILL);
        }
    }

    fn on_exit(&mut self, name: &str, pid: i32, status: i32) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.pid != Some(pid) {
            return;
        }
        let code = exit_code(status);
        let was_ready = svc.ready;
        svc.pid = None;
        svc.last_exit = Some(code);
        svc.stop_time = now_unix();
        svc.ready = false;
        svc.cancel_timer();
        svc.cancel_probe();
        tracing::info!(service = name, pid, code, "exited");
        if svc.attach == Attach::Foreground {
            svc.state = ProcessState::Exited;
            svc.want_up = false;
            self.main_exit = Some(code);
            self.begin_shutdown(None);
            return;
        }
        if svc.state == ProcessState::Stopping {
            return self.stopped(name, pid);
        }
        if self.shutdown.is_some() {
            svc.state = ProcessState::Exited;
            return;
        }
        let expected = libc::WIFEXITED(status) && svc.spec.exit_codes.contains(&code);
        let was_up = svc.state == ProcessState::Running;
        if svc.is_task() {
            if expected {
                self.task_done(name);
            } else {
                self.failed_attempt(name, format!("Exited with status {code}"));
            }
            return;
        }
        if !was_up {
            return self.failed_attempt(
                name,
                "Exited too quickly (process log may have details)".into(),
            );
        }
        svc.state = ProcessState::Exited;
        svc.note = Some(format!("Exited with status {code}"));
        let restart = match svc.spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !expected,
            RestartPolicy::Never => false,
        };
        if !restart {
            svc.want_up = false;
            if !expected && svc.spec.required {
                self.fail_for_good(name, format!("Exited with status {code}"));
            }
            return;
        }
        let now = Instant::now();
        let window = svc.spec.crash_loop.window;
        svc.recent.push_back(now);
        while svc
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            svc.recent.pop_front();
        }
        let in_window = svc.recent.len() as u32;
        if in_window > svc.spec.crash_loop.max_restarts {
            let reason = format!(
                "Crash loop: {in_window} restarts within {}",
                humantime::format_duration(window)
            );
            return self.fail_for_good(name, reason);
        }
        // A service that was ready before it crashed restarts at once; crashes in a row
        // without becoming ready in between back off (the crash-loop limit above bounds
        // both).
        svc.crash_streak = if was_ready { 0 } else { svc.crash_streak + 1 };
        let delay = if svc.crash_streak == 0 {
            Duration::ZERO
        } else {
            backoff_delay(&svc.spec, svc.crash_streak)
        };
        if delay.is_zero() {
            svc.want_up = true;
        } else {
            svc.state = ProcessState::Backoff;
            svc.want_up = true;
            self.schedule(name, delay);
        }
    }

    fn stopped(&mut self, name: &str, pid: i32) {
        // Stragglers left in its process group (a wrapper script's children) get the stop
        // signal too; whatever ignores it dies with the init or at the deadline.
        let svc = self.services.get_mut(name).expect("known");
        kill_group(
            pid,
            pid1::parse_signal(&svc.spec.stop_signal).unwrap_or(libc::SIGTERM),
        );
        svc.state = ProcessState::Stopped;
        svc.note = Some("Stopped".into());
        tracing::info!(service = name, "stopped");
        if let Some(spec) = svc.replace_with.take() {
            svc.spec = spec;
            self.reorder();
        }
        let svc = self.services.get_mut(name).expect("known");
        if svc.remove_after_stop {
            self.services.remove(name);
            self.reorder();
            return;
        }
        if std::mem::take(&mut svc.then_start) && self.shutdown.is_none() {
            svc.want_up = true;
            svc.attempts = 0;
            svc.note = None;
        }
    }

    fn task_done(&mut self, name: &str) {
        let svc = self.services.get_mut(name).expect("known");
        svc.state = ProcessState::Exited;
        svc.ready = true;
        svc.want_up = false;
        svc.note = Some("Completed".into());
        tracing::info!(service = name, "completed");
        if svc.spec.kind == ServiceKind::AfterReady {
            if let Some(marker) = svc.spec.marker.clone() {
                if let Err(e) = write_marker(&marker) {
                    tracing::error!(
                        service = name,
                        "cannot create marker {}: {e}; it will run again next boot",
                        marker.display()
                    );
                }
            }
        }
    }

    /// A start attempt failed: back off, or give up after `startretries`.
    fn failed_attempt(&mut self, name: &str, reason: String) {
        let svc = self.services.get_mut(name).expect("known");
        svc.attempts += 1;
        svc.ready = false;
        if svc.attempts > svc.spec.startretries || svc.attach == Attach::Foreground {
            let reason = svc.spawn_error.clone().unwrap_or(reason);
            return self.fail_for_good(name, reason);
        }
        let delay = backoff_delay(&svc.spec, svc.attempts);
        tracing::warn!(
            service = name,
            attempt = svc.attempts,
            "{reason}; retrying in {}",
            humantime::format_duration(delay)
        );
        svc.state = ProcessState::Backoff;
        svc.note = Some(reason);
        self.schedule(name, delay);
    }

    fn fail_for_good(&mut self, name: &str, reason: String) {
        let svc = self.services.get_mut(name).expect("known");
        svc.want_up = false;
        if svc.state != ProcessState::Exited || svc.spec.restart != RestartPolicy::Never {
            svc.state = ProcessState::Fatal;
        }
        svc.note = Some(reason.clone());
        let required = svc.spec.required;
        tracing::error!(service = name, required, "failed for good: {reason}");
        if required {
            self.required_failed.push(name.to_string());
            self.begin_shutdown(None);
        }
    }

    /// Ask a running service to stop; SIGKILL to its group after its stop timeout.
    fn begin_stop(&mut self, name: &str) {
        let main_sig = self.shutdown.as_ref().and_then(|s| s.signal);
        let svc = self.services.get_mut(name).expect("known");
        let Some(pid) = svc.pid else { return };
        let sig = match (svc.attach, main_sig) {
            (Attach::Foreground, Some(s)) => s,
            _ => pid1::parse_signal(&svc.spec.stop_signal).unwrap_or(libc::SIGTERM),
        };
        svc.state = ProcessState::Stopping;
        svc.ready = false;
        svc.cancel_probe();
        tracing::info!(service = name, pid, signal = sig, "stopping");
        if svc.spec.stop_as_group {
            kill_group(pid, sig);
        } else {
            kill_pid(pid, sig);
        }
        let timeout = svc.spec.stop_timeout;
        self.schedule(name, timeout);
    }

    fn begin_shutdown(&mut self, signal: Option<i32>) {
        if self.shutdown.is_some() {
            return;
        }
        tracing::info!(signal, "shutting down");
        self.shutdown = Some(Shutdown {
            signal,
            killed: false,
            gave_up: false,
        });
        for svc in self.services.values_mut() {
            svc.want_up = false;
            svc.then_start = false;
            if svc.pid.is_none() && svc.state == ProcessState::Backoff {
                svc.cancel_timer();
                svc.state = ProcessState::Stopped;
            }
        }
        let tx = self.tx.clone();
        let deadline = self.deadline;
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            let _ = tx.send(Msg::Deadline);
        });
    }

    /// Stop each running service once every service started after it that depends on it
    /// (even transitively), or has a higher priority, is gone.
    fn shutdown_step(&mut self) {
        let alive: Vec<bool> = self
            .order
            .iter()
            .map(|n| self.services[n].pid.is_some())
            .collect();
        let mut to_stop = Vec::new();
        for (i, name) in self.order.iter().enumerate() {
            let svc = &self.services[name];
            if svc.pid.is_none() || svc.state == ProcessState::Stopping {
                continue;
            }
            let blocked = self.order[i + 1..].iter().enumerate().any(|(j, later)| {
                let l = &self.services[later];
                alive[i + 1 + j]
                    && (l.spec.priority > svc.spec.priority || self.depends_on(later, name))
            });
            if !blocked {
                to_stop.push(name.clone());
            }
        }
        for name in to_stop {
            self.begin_stop(&name);
        }
    }

    /// Whether `who` depends on `on`, directly or through other services (a completed
    /// one-shot in between still links them).
    fn depends_on(&self, who: &str, on: &str) -> bool {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack = vec![who];
        while let Some(n) = stack.pop() {
            let Some(svc) = self.services.get(n) else {
                continue;
            };
            for d in &svc.spec.depends_on {
                if d == on {
                    return true;
                }
                if seen.insert(d.as_str()) {
                    stack.push(d);
                }
            }
        }
        false
    }

    fn on_deadline(&mut self) {
        let Some(sd) = self.shutdown.as_mut() else {
            return;
        };
        if sd.killed {
            // Processes that survive SIGKILL (uninterruptible sleep) are not waited for.
            sd.gave_up = true;
            return;
        }
        sd.killed = true;
        for (name, svc) in &self.services {
            if let Some(pid) = svc.pid {
                tracing::warn!(service = %name, pid, "shutdown deadline passed; killing");
                kill_group(pid, libc::SIGKILL);
                kill_pid(pid, libc::SIGKILL);
            }
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = tx.send(Msg::Deadline);
        });
    }

    fn forward(&mut self, sig: i32) {
        let targets: Vec<i32> = match (&self.main, self.forward) {
            (Some(main), ForwardSignals::Main) => self
                .services
                .get(main)
                .and_then(|s| s.pid)
                .into_iter()
                .collect(),
            _ => self.services.values().filter_map(|s| s.pid).collect(),
        };
        tracing::debug!(signal = sig, ?targets, "forwarding signal");
        for pid in targets {
            kill_pid(pid, sig);
        }
    }
}

/// Create the after-ready marker atomically and durably.
fn write_marker(path: &std::path::Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let stamp = format!("{}\n", now_unix());
    crate::fsutil::write_atomic(path, stamp.as_bytes(), 0o644)
}
