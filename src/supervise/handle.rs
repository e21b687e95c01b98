//! The public face of a running supervisor. Cloneable; every method is safe to call from
//! any task. `supervisord` (XML-RPC) and `hooks` (HTTP) use only this.
//!
//! INTERFACE CONTRACT (shared by several modules): the method names and signatures below
//! may be extended but not changed without updating every caller.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::engine::{Msg, Service, Shared};
use super::{
    LogTail, ProcessState, ServiceInfo, ServiceKind, ServiceSpec, Stream, SuperviseError,
    UpdateReport,
};

/// Where a set of service definitions came from; `apply` replaces one origin's set only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `supervise.services` in cfy-init's own config.
    Native,
    /// `[program:x]` sections of supervisord files.
    Supervisord,
}

/// Counters for metrics.
#[derive(Debug, Clone, Default)]
pub struct SupervisorStats {
    pub reaped: u64,
    pub dropped_log_lines: u64,
}

/// A cloneable, `Send + Sync` handle on the running supervisor. Its futures are `Send`,
/// so they can be awaited from axum handlers or any other task.
#[derive(Clone)]
pub struct SupervisorHandle {
    shared: Arc<Shared>,
}

impl SupervisorHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Send a command to the event loop and wait for its answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SuperviseError>>) -> Msg,
    ) -> Result<T, SuperviseError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .tx
            .send(make(tx))
            .map_err(|_| SuperviseError::ShuttingDown)?;
        rx.await.unwrap_or(Err(SuperviseError::ShuttingDown))
    }

    /// Wait until `done` says the named service reached an end state (Some), re-checking
    /// after every state change. A service that disappears is `BadName`.
    async fn wait_for(
        &self,
        name: &str,
        mut changed: tokio::sync::watch::Receiver<u64>,
        done: impl Fn(&Service) -> Option<Result<(), SuperviseError>>,
    ) -> Result<(), SuperviseError> {
        loop {
            {
                let st = self.shared.lock();
                match st.services.get(name) {
                    None => return Err(SuperviseError::BadName(name.to_string())),
                    Some(svc) => {
                        if let Some(r) = done(svc) {
                            return r;
                        }
                    }
                }
            }
            if changed.changed().await.is_err() {
                return Err(SuperviseError::ShuttingDown);
            }
        }
    }

    /// Every service, in start order.
    pub async fn status(&self) -> Vec<ServiceInfo> {
        self.status_now()
    }

    /// How many processes each service has (its whole tree, escapees included), by name:
    /// one scan of `/proc`, made only when asked (`GET /status`).
    pub fn process_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let (names, markers): (Vec<String>, Vec<String>) = {
            let st = self.shared.lock();
            st.services
                .values()
                .filter_map(|s| Some((s.spec.name.clone(), s.marker.clone()?)))
                .unzip()
        };
        let counts = super::tree::counts(&markers);
        names.into_iter().zip(counts).collect()
    }

    /// Every service, in start order (without awaiting; for synchronous callers).
    pub fn status_now(&self) -> Vec<ServiceInfo> {
        let st = self.shared.lock();
        st.order
            .iter()
            .filter_map(|n| st.services.get(n))
            .map(|s| s.info())
            .collect()
    }

    /// Every service in start order, each with what `pick` takes from its spec, under one
    /// lock (for callers that need a field or two: cloning whole specs is not cheap).
    pub fn status_with<T>(&self, mut pick: impl FnMut(&ServiceSpec) -> T) -> Vec<(ServiceInfo, T)> {
        let st = self.shared.lock();
        st.order
            .iter()
            .filter_map(|n| st.services.get(n))
            .map(|s| (s.info(), pick(&s.spec)))
            .collect()
    }

    /// One service.
    pub async fn info(&self, name: &str) -> Result<ServiceInfo, SuperviseError> {
        self.shared
            .lock()
            .services
            .get(name)
            .map(|s| s.info())
            .ok_or_else(|| SuperviseError::BadName(name.to_string()))
    }

    /// Start a stopped service; with `wait`, return once it is RUNNING (tasks: completed),
    /// or an error once it failed for good or was stopped meanwhile. While it waits for its
    /// dependencies or backs off between attempts, `wait` keeps waiting.
    pub async fn start(&self, name: &str, wait: bool) -> Result<(), SuperviseError> {
        let changed = self.shared.changed.subscribe();
        let n = name.to_string();
        self.ask(|r| Msg::Start(n, r)).await?;
        if !wait {
            return Ok(());
        }
        self.wait_for(name, changed, |s| match s.state {
            ProcessState::Running if s.spec.kind == ServiceKind::Longrun => Some(Ok(())),
            ProcessState::Exited if s.spec.kind != ServiceKind::Longrun && s.ready => Some(Ok(())),
            ProcessState::Fatal => Some(Err(match &s.spawn_error {
                Some(reason) => SuperviseError::SpawnError {
                    name: s.spec.name.clone(),
                    reason: reason.clone(),
                },
                None => SuperviseError::AbnormalTermination(s.spec.name.clone()),
            })),
            ProcessState::Exited | ProcessState::Stopped | ProcessState::Stopping if !s.want_up => {
                Some(Err(SuperviseError::AbnormalTermination(
                    s.spec.name.clone(),
                )))
            }
            _ => None,
        })
        .await
    }

    /// Stop a service (stop signal, stop timeout, SIGKILL); with `wait`, return once stopped.
    pub async fn stop(&self, name: &str, wait: bool) -> Result<(), SuperviseError> {
        let changed = self.shared.changed.subscribe();
        let n = name.to_string();
        self.ask(|r| Msg::Stop(n, r)).await?;
        if !wait {
            return Ok(());
        }
        match self
            .wait_for(name, changed, |s| s.pid.is_none().then_some(Ok(())))
            .await
        {
            // Removed once stopped (a removed definition): that is stopped too.
            Err(SuperviseError::BadName(_)) => Ok(()),
            r => r,
        }
    }

    /// Stop (when running) then start, waiting for both.
    pub async fn restart(&self, name: &str) -> Result<(), SuperviseError> {
        match self.stop(name, true).await {
            Ok(()) | Err(SuperviseError::NotRunning(_)) => {}
            Err(e) => return Err(e),
        }
        self.start(name, true).await
    }

    /// Send a signal by name (`HUP`, `SIGUSR1`, or a number) to a running service.
    pub async fn signal(&self, name: &str, signal: &str) -> Result<(), SuperviseError> {
        let sig = crate::pid1::parse_signal(signal)
            .ok_or_else(|| SuperviseError::BadSignal(signal.to_string()))?;
        let n = name.to_string();
        self.ask(|r| Msg::Signal(n, sig, r)).await
    }

    /// The current definition of one service.
    pub fn spec(&self, name: &str) -> Option<Arc<ServiceSpec>> {
        self.shared
            .lock()
            .services
            .get(name)
            .map(|s| s.spec.clone())
    }

    /// Current definitions, in start order.
    pub async fn specs(&self) -> Vec<Arc<ServiceSpec>> {
        let st = self.shared.lock();
        st.order
            .iter()
            .filter_map(|n| st.services.get(n))
            .map(|s| s.spec.clone())
            .collect()
    }

    /// Add a service (started when `autostart`, once its dependencies are ready).
    /// A name already in use is `BadArguments`.
    pub async fn add(
        &self,
        spec: impl Into<Arc<ServiceSpec>>,
        origin: Origin,
    ) -> Result<(), SuperviseError> {
        let spec = spec.into();
        self.ask(|r| Msg::Add(spec, origin, r)).await
    }

    /// Remove a stopped service. A running one is `AlreadyStarted` (supervisord's
    /// STILL_RUNNING).
    pub async fn remove(&self, name: &str) -> Result<(), SuperviseError> {
        let n = name.to_string();
        self.ask(|r| Msg::Remove(n, r)).await
    }

    /// Replace the definitions of one origin: added ones start, changed ones restart,
    /// removed ones stop. Used for SIGHUP reload.
    pub async fn apply(&self, specs: Vec<Arc<ServiceSpec>>, origin: Origin) -> UpdateReport {
        let (tx, rx) = oneshot::channel();
        if self.shared.tx.send(Msg::Apply(specs, origin, tx)).is_err() {
            return UpdateReport::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Captured output: up to `len` bytes starting at `offset` (negative offset = from end).
    pub fn tail(
        &self,
        name: &str,
        stream: Stream,
        offset: i64,
        len: usize,
    ) -> Result<LogTail, SuperviseError> {
        let tails = self
            .shared
            .lock()
            .services
            .get(name)
            .map(|s| s.tails.clone())
            .ok_or_else(|| SuperviseError::BadName(name.to_string()))?;
        let ring = tails.ring(stream).lock().unwrap_or_else(|e| e.into_inner());
        Ok(ring.read(offset, len))
    }

    /// True when every service that counts is ready ([`super::counts_for_readiness`]); with
    /// no service that counts (none at all, or only after-ready tasks),
    /// `supervise.ready_without_services`.
    pub async fn all_ready(&self) -> bool {
        self.all_ready_now()
    }

    /// [`Self::all_ready`] without awaiting.
    pub fn all_ready_now(&self) -> bool {
        let st = self.shared.lock();
        if st.is_shutting_down() {
            return false;
        }
        let infos: Vec<ServiceInfo> = st.services.values().map(|s| s.info()).collect();
        let mut counted = super::counts_for_readiness(&infos).peekable();
        if counted.peek().is_none() {
            return st.ready_without_services;
        }
        counted.all(|s| s.ready)
    }

    /// Begin a graceful shutdown (as SIGTERM would).
    pub fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let _ = self.shared.tx.send(Msg::Shutdown(None));
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> SupervisorStats {
        SupervisorStats {
            reaped: crate::pid1::reaper().reaped(),
            dropped_log_lines: super::logs::dropped_lines(),
        }
    }

    /// A receiver that changes after every state transition (for watchers such as
    /// metrics or readiness endpoints that want to react instead of polling).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }
}
