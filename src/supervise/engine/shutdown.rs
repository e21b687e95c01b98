//! Stopping: one service (stop signal, then SIGKILL after its timeout), ordered shutdown
//! of all of them (dependents first), the shutdown deadline and signal forwarding.

use std::time::Duration;

use super::{Msg, Shutdown, State};
use crate::pid1::{self, kill_group, kill_pid};
use crate::supervise::spawn::Attach;
use crate::supervise::{ForwardSignals, ProcessState};

impl State {
    /// Ask a running service to stop; SIGKILL to its group after its stop timeout.
    pub(super) fn begin_stop(&mut self, name: &str) {
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
        // The rest of its tree (setsid escapees, double-forked daemons) gets it too.
        if let Some(m) = &svc.marker {
            crate::supervise::tree::signal(m, sig, Some(pid));
        }
        let timeout = svc.spec.stop_timeout;
        self.schedule(name, timeout);
    }

    pub(super) fn begin_shutdown(&mut self, signal: Option<i32>) {
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
    pub(super) fn shutdown_step(&mut self) {
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
    pub(super) fn depends_on(&self, who: &str, on: &str) -> bool {
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

    pub(super) fn on_deadline(&mut self) {
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
            if let Some(m) = &svc.marker {
                crate::supervise::tree::signal(m, libc::SIGKILL, None);
            }
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = tx.send(Msg::Deadline);
        });
    }

    pub(super) fn forward(&mut self, sig: i32) {
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
