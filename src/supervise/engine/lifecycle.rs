//! The per-service state machine going up: what may start now (dependency order),
//! spawning, the start-up grace and back-off timer, and readiness probes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{now_unix, Msg, State};
use crate::pid1::{self, kill_group, kill_pid};
use crate::supervise::logs::{self, Sink};
use crate::supervise::spawn::{self, Attach};
use crate::supervise::{ProcessState, ReadinessCheck, ServiceKind, Stream};

impl State {
    /// Start everything that wants to run and whose dependencies are satisfied; during
    /// shutdown, stop whatever may stop now.
    pub(super) fn tick(&mut self) {
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
    pub(super) fn unmet_dependencies(&self, name: &str) -> Vec<String> {
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

    pub(super) fn gen(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    /// Spawn a service now. True when it became ready at once (a skipped task).
    pub(super) fn launch(&mut self, name: &str) -> bool {
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
        svc.cancel_probe();
        svc.health = Default::default();
        svc.exitstatus = None; // supervisord clears it on every spawn
        let marker = crate::supervise::tree::marker(name, gen);
        svc.marker = Some(marker.clone());
        match spawn::spawn(&svc.spec, svc.attach, &marker, on_exit) {
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
                        let pump = tokio::spawn(logs::pump(
                            label.clone(),
                            stream,
                            fd,
                            Sink::for_target(target),
                            svc.tails.clone(),
                            logs::LineRules {
                                level: svc.spec.stderr_level,
                                limit: svc.spec.log_rate_limit.clone(),
                            },
                        ));
                        self.pumps.retain(|p| !p.is_finished());
                        self.pumps.push(pump);
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

    /// Arm the service's one timer (start-up grace, back-off or stop timeout).
    pub(super) fn schedule(&mut self, name: &str, after: Duration) {
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

    pub(super) fn enter_running(&mut self, name: &str) {
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
        if svc.spec.liveness.is_some() && !svc.is_task() {
            self.start_liveness(name);
        }
    }

    pub(super) fn on_timer(&mut self, name: &str, gen: u64) {
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
                    if let Some(m) = &svc.marker {
                        crate::supervise::tree::signal(m, libc::SIGKILL, Some(pid));
                    }
                }
            }
            _ => {}
        }
    }
}
