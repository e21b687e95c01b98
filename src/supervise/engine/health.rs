//! Health checks as seen by the event loop: the readiness check runs for as long as the
//! service runs (Kubernetes semantics: `failure_threshold` failures in a row make it not
//! ready, `success_threshold` passes in a row ready again; before the first pass, `retries`
//! failures make the start fail), and the optional liveness check restarts it after its
//! threshold. The checks themselves run as tasks ([`crate::supervise::readiness::watch`]);
//! only their results arrive here, so a slow or hanging check never blocks the loop.

use super::{Msg, State};
use crate::pid1::{kill_group, kill_pid};
use crate::supervise::readiness;
use crate::supervise::{ProcessState, RestartPolicy};

impl State {
    /// Start the readiness check task of a freshly spawned service.
    pub(super) fn start_probe(&mut self, name: &str, gen: u64) {
        let tx = self.tx.clone();
        let svc = self.services.get_mut(name).expect("known");
        if let Some(p) = svc.probe.take() {
            p.abort();
        }
        svc.probe_gen = gen;
        let r = svc.spec.readiness.clone();
        let name = name.to_string();
        let task = tokio::spawn(readiness::watch(
            r.check,
            r.timeout,
            r.interval,
            r.period,
            move |result| {
                tx.send(Msg::Probe {
                    name: name.clone(),
                    gen,
                    result,
                })
                .is_ok()
            },
        ));
        svc.probe = Some(task.abort_handle());
    }

    /// Start the liveness check task of a service that just became RUNNING.
    pub(super) fn start_liveness(&mut self, name: &str) {
        let gen = self.gen();
        let tx = self.tx.clone();
        let svc = self.services.get_mut(name).expect("known");
        let Some(l) = svc.spec.liveness.clone() else {
            return;
        };
        if let Some(p) = svc.health.liveness.take() {
            p.abort();
        }
        svc.health.live_gen = gen;
        svc.health.live_fails = 0;
        let name = name.to_string();
        let task = tokio::spawn(async move {
            tokio::time::sleep(l.initial_delay).await;
            readiness::watch(l.check, l.timeout, l.period, l.period, move |result| {
                tx.send(Msg::Liveness {
                    name: name.clone(),
                    gen,
                    result,
                })
                .is_ok()
            })
            .await
        });
        svc.health.liveness = Some(task.abort_handle());
    }

    pub(super) fn on_probe(&mut self, name: &str, gen: u64, result: Result<(), String>) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.probe_gen != gen || svc.pid.is_none() || svc.state == ProcessState::Stopping {
            return;
        }
        let r = &svc.spec.readiness;
        let h = &mut svc.health;
        match result {
            Ok(()) => {
                h.fails = 0;
                h.passes += 1;
                if !h.passed_once {
                    h.passed_once = true;
                    h.last_error = None;
                    svc.ready = true;
                    tracing::info!(service = name, "ready");
                    if svc.state == ProcessState::Starting {
                        self.enter_running(name);
                    }
                } else if !svc.ready && h.passes >= r.success_threshold {
                    h.last_error = None;
                    svc.ready = true;
                    tracing::info!(service = name, "ready again");
                }
            }
            Err(reason) => {
                h.passes = 0;
                h.fails += 1;
                let fails = h.fails;
                if !h.passed_once {
                    h.last_error = Some(reason.clone());
                    if r.retries > 0 && fails >= r.retries {
                        self.start_check_failed(name, &reason);
                    }
                } else if svc.ready && fails >= r.failure_threshold {
                    svc.ready = false;
                    tracing::warn!(
                        service = name,
                        failures = fails,
                        "not ready: readiness check failed: {reason}"
                    );
                    h.last_error = Some(reason);
                } else if svc.ready {
                    tracing::debug!(
                        service = name,
                        failures = fails,
                        "readiness check failed: {reason}"
                    );
                } else {
                    h.last_error = Some(reason);
                }
            }
        }
    }

    /// The readiness check failed `retries` times before ever passing: the start failed.
    fn start_check_failed(&mut self, name: &str, reason: &str) {
        let svc = self.services.get_mut(name).expect("known");
        let Some(pid) = svc.pid else { return };
        tracing::warn!(
            service = name,
            "readiness check failed ({reason}); killing it"
        );
        svc.note = Some(format!("Readiness check failed: {reason}"));
        if let Some(p) = svc.probe.take() {
            p.abort();
        }
        // Counted as a failed start when its exit arrives.
        svc.state = ProcessState::Starting;
        svc.cancel_timer();
        kill_group(pid, libc::SIGKILL);
        kill_pid(pid, libc::SIGKILL);
    }

    pub(super) fn on_liveness(&mut self, name: &str, gen: u64, result: Result<(), String>) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.health.live_gen != gen || svc.pid.is_none() || svc.state != ProcessState::Running {
            return;
        }
        let Some(threshold) = svc.spec.liveness.as_ref().map(|l| l.failure_threshold) else {
            return;
        };
        let reason = match result {
            Ok(()) => {
                svc.health.live_fails = 0;
                return;
            }
            Err(reason) => reason,
        };
        svc.health.live_fails += 1;
        let fails = svc.health.live_fails;
        if fails < threshold {
            tracing::debug!(
                service = name,
                failures = fails,
                "liveness check failed: {reason}"
            );
            return;
        }
        let again = svc.spec.restart != RestartPolicy::Never;
        tracing::warn!(
            service = name,
            failures = fails,
            "liveness check failed: {reason}; {}",
            if again {
                "restarting it"
            } else {
                "stopping it"
            }
        );
        svc.cancel_probe();
        svc.want_up = false;
        svc.then_start = again;
        self.begin_stop(name);
        let svc = self.services.get_mut(name).expect("known");
        svc.note = Some(format!(
            "Liveness check failed {fails} times in a row: {reason}"
        ));
    }
}
