//! The supervisor's event loop: one task owns every state transition. Exits (from the
//! reaper), timers, probe results, signals and commands from [`super::SupervisorHandle`]
//! all arrive as [`Msg`]s on one channel; after each message the loop starts whatever has
//! become startable, advances an ordered shutdown, and tells waiters that state changed.
//!
//! Timers exist only while something is pending (start-up grace, back-off, stop timeout,
//! probes, the shutdown deadline), so an idle supervisor sleeps without wake-ups.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};

use super::spawn::Attach;
use super::{ForwardSignals, Origin, ServiceSpec, SuperviseConfig, SuperviseError, UpdateReport};

mod commands;
mod health;
mod lifecycle;
mod restart;
mod service;
mod shutdown;
pub(crate) use service::Service;

type Reply<T = ()> = oneshot::Sender<Result<T, SuperviseError>>;

/// Everything the event loop reacts to.
pub(crate) enum Msg {
    Start(String, Reply),
    Stop(String, Reply),
    Signal(String, i32, Reply),
    Add(Arc<ServiceSpec>, Origin, Reply),
    Remove(String, Reply),
    Apply(Vec<Arc<ServiceSpec>>, Origin, oneshot::Sender<UpdateReport>),
    Exit {
        name: String,
        pid: i32,
        status: i32,
    },
    Timer {
        name: String,
        gen: u64,
    },
    /// A readiness check's result.
    Probe {
        name: String,
        gen: u64,
        result: Result<(), String>,
    },
    /// A liveness check's result.
    Liveness {
        name: String,
        gen: u64,
        result: Result<(), String>,
    },
    /// Begin a graceful shutdown; `Some(sig)`: the signal that asked for it.
    Shutdown(Option<i32>),
    Forward(i32),
    Deadline,
    /// Look again whether processes left behind by exited services are gone.
    Recheck,
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

/// All services and the supervisor-wide state.
pub(crate) struct State {
    /// Boxed values: a B-tree node holds room for 11, and a `Service` is about 1 KiB.
    pub services: BTreeMap<String, Box<Service>>,
    /// Names in start order (reverse: stop order).
    pub order: Vec<String>,
    tx: mpsc::UnboundedSender<Msg>,
    shutdown: Option<Shutdown>,
    pub required_failed: Vec<String>,
    /// The first required service that failed for good and why (`exited 1`, `killed by
    /// SIGSEGV`, `crash loop: 5 restarts in 60 s`): it ended the run.
    pub ended_by: Option<(String, String)>,
    /// The `run -- CMD` service, its exit code, or the code for a failed spawn.
    pub main: Option<String>,
    pub main_exit: Option<i32>,
    forward: ForwardSignals,
    deadline: Duration,
    next_gen: u64,
    /// Output pumps still reading; drained (bounded) before the init exits so that a
    /// service's last lines are not lost.
    pub pumps: Vec<tokio::task::JoinHandle<()>>,
    /// `supervise.ready_without_services`.
    pub ready_without_services: bool,
    /// Markers of exited services' trees that still had processes: shutdown waits for
    /// them (they got the stop signal, and SIGKILL after the stop timeout).
    leftovers: Vec<String>,
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
        ended_by: None,
        main: None,
        main_exit: None,
        forward: config.forward_signals,
        deadline: config.shutdown_deadline,
        next_gen: 1,
        ready_without_services: config.ready_without_services,
        pumps: Vec::new(),
        leftovers: Vec::new(),
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

impl State {
    /// Add a service (config time or at run time).
    pub fn insert(&mut self, spec: impl Into<Arc<ServiceSpec>>, origin: Origin, attach: Attach) {
        self.insert_unordered(spec, origin, attach);
        self.reorder();
    }

    /// Add a service without recomputing the start order: for loading many at once, followed
    /// by one [`Self::reorder`].
    pub fn insert_unordered(
        &mut self,
        spec: impl Into<Arc<ServiceSpec>>,
        origin: Origin,
        attach: Attach,
    ) {
        let svc = Service::new(spec.into(), origin, attach, self.shutdown.is_some());
        self.services.insert(svc.spec.name.clone(), Box::new(svc));
    }

    /// Recompute the start order.
    pub fn reorder(&mut self) {
        self.order = super::order::start_order(self.services.values().map(|s| &*s.spec));
    }

    pub fn finished(&self) -> bool {
        match &self.shutdown {
            Some(s) => {
                s.gave_up
                    || (self.services.values().all(|s| s.pid.is_none()) && !self.leftovers_alive())
            }
            None => false,
        }
    }

    /// Processes left behind by exited services still run: look again soon (only during
    /// shutdown, bounded by the deadline).
    fn leftovers_alive(&self) -> bool {
        let alive = self
            .leftovers
            .iter()
            .any(|m| !super::tree::members(m).is_empty());
        if alive {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(Msg::Recheck);
            });
        }
        alive
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
                let _ = reply.send(self.cmd_add(spec, origin));
            }
            Msg::Remove(name, reply) => {
                let _ = reply.send(self.cmd_remove(&name));
            }
            Msg::Apply(specs, origin, reply) => {
                let _ = reply.send(self.cmd_apply(specs, origin));
            }
            Msg::Exit { name, pid, status } => self.on_exit(&name, pid, status),
            Msg::Timer { name, gen } => self.on_timer(&name, gen),
            Msg::Probe { name, gen, result } => self.on_probe(&name, gen, result),
            Msg::Liveness { name, gen, result } => self.on_liveness(&name, gen, result),
            Msg::Shutdown(sig) => self.begin_shutdown(sig),
            Msg::Forward(sig) => self.forward(sig),
            Msg::Deadline => self.on_deadline(),
            Msg::Recheck => {}
        }
    }

    fn svc(&mut self, name: &str) -> Result<&mut Service, SuperviseError> {
        self.services
            .get_mut(name)
            .map(|s| &mut **s)
            .ok_or_else(|| SuperviseError::BadName(name.to_string()))
    }
}
