//! Restart policy: what an exit means (completed task, failed start, crash), back-off,
//! crash-loop limits, and giving up for good.

use std::time::{Duration, Instant};

use super::{now_unix, State};
use crate::pid1::{self, exit_code, kill_group};
use crate::supervise::spawn::Attach;
use crate::supervise::{ProcessState, RestartPolicy, ServiceKind};

impl State {
    pub(super) fn on_exit(&mut self, name: &str, pid: i32, status: i32) {
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
        // supervisord's exitstatus: the code, or -1 for a signal (cleared again below when
        // this was a start that failed "too quickly").
        svc.exitstatus = Some(if libc::WIFEXITED(status) { code } else { -1 });
        svc.stop_time = now_unix();
        svc.ready = false;
        svc.cancel_timer();
        svc.cancel_probe();
        tracing::info!(service = name, pid, code, "exited");
        if let Some(m) = svc.marker.clone() {
            let sig = pid1::parse_signal(&svc.spec.stop_signal).unwrap_or(libc::SIGTERM);
            let left = crate::supervise::tree::signal(&m, sig, None);
            if left > 0 {
                tracing::warn!(
                    service = name,
                    left,
                    "left processes behind; stopping them (signal {sig}, SIGKILL after {})",
                    humantime::format_duration(svc.spec.stop_timeout)
                );
                self.leftovers
                    .retain(|m| !crate::supervise::tree::members(m).is_empty());
                self.leftovers.push(m.clone());
                let tx = self.tx.clone();
                let after = svc.spec.stop_timeout;
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    crate::supervise::tree::signal(&m, libc::SIGKILL, None);
                    let _ = tx.send(super::Msg::Recheck);
                });
            }
        }
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
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
                self.failed_attempt(name, why_ended(status));
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
                self.fail_for_good(name, why_ended(status));
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
            svc.spec.backoff.delay(svc.crash_streak)
        };
        if delay.is_zero() {
            svc.want_up = true;
        } else {
            svc.state = ProcessState::Backoff;
            svc.want_up = true;
            self.schedule(name, delay);
        }
    }

    pub(super) fn stopped(&mut self, name: &str, pid: i32) {
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

    pub(super) fn task_done(&mut self, name: &str) {
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
    pub(super) fn failed_attempt(&mut self, name: &str, reason: String) {
        let svc = self.services.get_mut(name).expect("known");
        svc.attempts += 1;
        svc.ready = false;
        svc.exitstatus = None;
        if svc.attempts > svc.spec.startretries || svc.attach == Attach::Foreground {
            let reason = svc.spawn_error.clone().unwrap_or(reason);
            return self.fail_for_good(name, reason);
        }
        let delay = svc.spec.backoff.delay(svc.attempts);
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

    pub(super) fn fail_for_good(&mut self, name: &str, reason: String) {
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
            if self.ended_by.is_none() {
                let mut why = reason;
                if let Some(first) = why.get(..1) {
                    why.replace_range(..1, &first.to_ascii_lowercase());
                }
                self.ended_by = Some((name.to_string(), why));
            }
            self.begin_shutdown(None);
        }
    }
}

/// Why a process ended, from its raw wait status: `exited 1`, `killed by SIGSEGV`.
pub(crate) fn why_ended(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("signal {sig}"));
        format!("killed by {name}")
    } else {
        format!("ended with wait status {status}")
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
