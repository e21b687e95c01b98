//! Commands from the handles: start, stop, signal, add, remove and apply a new set of
//! service definitions.

use std::sync::Arc;

use super::State;
use crate::pid1::kill_pid;
use crate::supervise::spawn::Attach;
use crate::supervise::{Origin, ProcessState, ServiceSpec, SuperviseError, UpdateReport};

impl State {
    pub(super) fn cmd_start(&mut self, name: &str) -> Result<(), SuperviseError> {
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

    pub(super) fn cmd_stop(&mut self, name: &str) -> Result<(), SuperviseError> {
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

    pub(super) fn cmd_signal(&mut self, name: &str, sig: i32) -> Result<(), SuperviseError> {
        let svc = self.svc(name)?;
        match svc.pid {
            Some(pid) => {
                kill_pid(pid, sig);
                Ok(())
            }
            None => Err(SuperviseError::NotRunning(name.to_string())),
        }
    }

    pub(super) fn cmd_add(
        &mut self,
        spec: Arc<ServiceSpec>,
        origin: Origin,
    ) -> Result<(), SuperviseError> {
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

    pub(super) fn cmd_remove(&mut self, name: &str) -> Result<(), SuperviseError> {
        let svc = self.svc(name)?;
        if svc.pid.is_some() || svc.state == ProcessState::Backoff {
            return Err(SuperviseError::AlreadyStarted(name.to_string()));
        }
        self.services.remove(name);
        self.reorder();
        tracing::info!(service = name, "removed");
        Ok(())
    }

    pub(super) fn cmd_apply(
        &mut self,
        specs: Vec<Arc<ServiceSpec>>,
        origin: Origin,
    ) -> UpdateReport {
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
}
