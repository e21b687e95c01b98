//! Stopping: one service (stop signal, then SIGKILL after its timeout), ordered shutdown
//! of all of them (dependents first), the shutdown deadline and signal forwarding.

use std::collections::HashSet;
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
    /// (even transitively), or has a higher priority, is gone. One pass from the end of the
    /// start order, linear in services and dependencies: it runs on every exit during a
    /// shutdown, so with 2 000 programs a pairwise check would cost seconds of PID 1's time.
    pub(super) fn shutdown_step(&mut self) {
        let mut to_stop = Vec::new();
        // What the live services later in the order depend on, transitively (closed under
        // dependencies: a completed one-shot in between still links them).
        let mut needed: HashSet<&str> = HashSet::new();
        let mut highest_later: Option<i32> = None;
        for name in self.order.iter().rev() {
            let svc = &self.services[name];
            if svc.pid.is_none() {
                continue;
            }
            let blocked = highest_later.is_some_and(|p| p > svc.spec.priority)
                || needed.contains(name.as_str());
            if !blocked && svc.state != ProcessState::Stopping {
                to_stop.push(name.clone());
            }
            highest_later = highest_later.max(Some(svc.spec.priority));
            self.add_dependencies(name, &mut needed);
        }
        for name in to_stop.into_iter().rev() {
            self.begin_stop(&name);
        }
    }

    /// Add what `who` depends on, directly or through other services, to `needed`; a name
    /// already there has had its own dependencies added, so each is walked once.
    fn add_dependencies<'a>(&'a self, who: &str, needed: &mut HashSet<&'a str>) {
        let mut stack: Vec<&str> = Vec::new();
        let push_deps = |n: &str, stack: &mut Vec<&'a str>, needed: &mut HashSet<&'a str>| {
            if let Some(svc) = self.services.get(n) {
                for d in &svc.spec.depends_on {
                    if needed.insert(d.as_str()) {
                        stack.push(d.as_str());
                    }
                }
            }
        };
        push_deps(who, &mut stack, needed);
        while let Some(n) = stack.pop() {
            push_deps(n, &mut stack, needed);
        }
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
