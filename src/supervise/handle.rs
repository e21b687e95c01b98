//! The public face of a running supervisor. Cloneable; every method is safe to call from
//! any task. `supervisord` (XML-RPC) and `hooks` (HTTP) use only this.
//!
//! INTERFACE CONTRACT (shared by several modules): the method names and signatures below
//! may be extended but not changed without updating every caller.

use super::{LogTail, ServiceInfo, ServiceSpec, Stream, SuperviseError, UpdateReport};

/// Where a set of service definitions came from; `apply` replaces one origin's set only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

#[derive(Clone)]
pub struct SupervisorHandle {
    _private: (),
}

#[allow(unused_variables)]
impl SupervisorHandle {
    /// Every service, in start order.
    pub async fn status(&self) -> Vec<ServiceInfo> {
        todo!()
    }
    /// One service.
    pub async fn info(&self, name: &str) -> Result<ServiceInfo, SuperviseError> {
        todo!()
    }
    /// Start a stopped service; with `wait`, return once it is RUNNING (or failed).
    pub async fn start(&self, name: &str, wait: bool) -> Result<(), SuperviseError> {
        todo!()
    }
    /// Stop a service (stop signal, stop timeout, SIGKILL); with `wait`, return once stopped.
    pub async fn stop(&self, name: &str, wait: bool) -> Result<(), SuperviseError> {
        todo!()
    }
    /// Stop then start.
    pub async fn restart(&self, name: &str) -> Result<(), SuperviseError> {
        todo!()
    }
    /// Send a signal by name (`HUP`, `SIGUSR1`, or a number) to a running service.
    pub async fn signal(&self, name: &str, signal: &str) -> Result<(), SuperviseError> {
        todo!()
    }
    /// Current definitions.
    pub async fn specs(&self) -> Vec<ServiceSpec> {
        todo!()
    }
    /// Add a service (started when `autostart`, once its dependencies are ready).
    pub async fn add(&self, spec: ServiceSpec, origin: Origin) -> Result<(), SuperviseError> {
        todo!()
    }
    /// Remove a stopped service.
    pub async fn remove(&self, name: &str) -> Result<(), SuperviseError> {
        todo!()
    }
    /// Replace the definitions of one origin: added ones start, changed ones restart,
    /// removed ones stop. Used for SIGHUP reload.
    pub async fn apply(&self, specs: Vec<ServiceSpec>, origin: Origin) -> UpdateReport {
        todo!()
    }
    /// Captured output: up to `len` bytes starting at `offset` (negative offset = from end).
    pub fn tail(
        &self,
        name: &str,
        stream: Stream,
        offset: i64,
        len: usize,
    ) -> Result<LogTail, SuperviseError> {
        todo!()
    }
    /// True when every required service is ready (tasks: completed).
    pub async fn all_ready(&self) -> bool {
        todo!()
    }
    /// Begin a graceful shutdown (as SIGTERM would).
    pub fn shutdown(&self) {
        todo!()
    }
    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        todo!()
    }
    pub fn stats(&self) -> SupervisorStats {
        todo!()
    }
}
