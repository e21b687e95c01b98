//! The part of the supervisor that snapshot, restore and the hooks API use, as an
//! object-safe trait. The real implementation is [`SupervisorHandle`]; [`NoServices`]
//! stands for "no supervisor" (`cfy-init` tools run outside the container's PID 1).

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::supervise::{ServiceInfo, SuperviseError, SupervisorHandle, SupervisorStats};

pub trait ServiceControl: Send + Sync + 'static {
    fn status(&self) -> BoxFuture<'_, Vec<ServiceInfo>>;
    fn info<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<ServiceInfo, SuperviseError>>;
    fn start<'a>(&'a self, name: &'a str, wait: bool) -> BoxFuture<'a, Result<(), SuperviseError>>;
    fn stop<'a>(&'a self, name: &'a str, wait: bool) -> BoxFuture<'a, Result<(), SuperviseError>>;
    fn restart<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), SuperviseError>>;
    fn all_ready(&self) -> BoxFuture<'_, bool>;
    fn is_shutting_down(&self) -> bool;
    fn stats(&self) -> SupervisorStats;
    /// True when a PID-1 reaper owns `waitpid` in this process, so child commands must be
    /// run through [`crate::pid1::output`].
    fn owns_reaping(&self) -> bool;
    /// Processes of each service's tree, by name (one `/proc` scan; for `GET /status`).
    fn process_counts(&self) -> std::collections::BTreeMap<String, usize> {
        Default::default()
    }
}

impl ServiceControl for SupervisorHandle {
    fn process_counts(&self) -> std::collections::BTreeMap<String, usize> {
        SupervisorHandle::process_counts(self)
    }
    fn status(&self) -> BoxFuture<'_, Vec<ServiceInfo>> {
        SupervisorHandle::status(self).boxed()
    }
    fn info<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<ServiceInfo, SuperviseError>> {
        SupervisorHandle::info(self, name).boxed()
    }
    fn start<'a>(&'a self, name: &'a str, wait: bool) -> BoxFuture<'a, Result<(), SuperviseError>> {
        SupervisorHandle::start(self, name, wait).boxed()
    }
    fn stop<'a>(&'a self, name: &'a str, wait: bool) -> BoxFuture<'a, Result<(), SuperviseError>> {
        SupervisorHandle::stop(self, name, wait).boxed()
    }
    fn restart<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), SuperviseError>> {
        SupervisorHandle::restart(self, name).boxed()
    }
    fn all_ready(&self) -> BoxFuture<'_, bool> {
        SupervisorHandle::all_ready(self).boxed()
    }
    fn is_shutting_down(&self) -> bool {
        SupervisorHandle::is_shutting_down(self)
    }
    fn stats(&self) -> SupervisorStats {
        SupervisorHandle::stats(self)
    }
    fn owns_reaping(&self) -> bool {
        true
    }
}

/// No supervisor: no services, always ready.
pub struct NoServices;

impl ServiceControl for NoServices {
    fn status(&self) -> BoxFuture<'_, Vec<ServiceInfo>> {
        async { Vec::new() }.boxed()
    }
    fn info<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<ServiceInfo, SuperviseError>> {
        async move { Err(SuperviseError::BadName(name.to_string())) }.boxed()
    }
    fn start<'a>(&'a self, name: &'a str, _: bool) -> BoxFuture<'a, Result<(), SuperviseError>> {
        async move { Err(SuperviseError::BadName(name.to_string())) }.boxed()
    }
    fn stop<'a>(&'a self, name: &'a str, _: bool) -> BoxFuture<'a, Result<(), SuperviseError>> {
        async move { Err(SuperviseError::BadName(name.to_string())) }.boxed()
    }
    fn restart<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), SuperviseError>> {
        async move { Err(SuperviseError::BadName(name.to_string())) }.boxed()
    }
    fn all_ready(&self) -> BoxFuture<'_, bool> {
        async { true }.boxed()
    }
    fn is_shutting_down(&self) -> bool {
        false
    }
    fn stats(&self) -> SupervisorStats {
        SupervisorStats::default()
    }
    fn owns_reaping(&self) -> bool {
        false
    }
}
