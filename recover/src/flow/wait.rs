//! Waiting: polling a long transition until it is observed (with its slack, how late it can
//! have been noticed), the periodic "still waiting" line, and the clocks a step is measured by.

use std::time::{Duration, Instant, SystemTime};

use super::{FlowError, Runner};

/// A wait says what it waits for at least this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// This process's CPU time (user + system) so far.
pub(super) fn cpu_time() -> Duration {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

impl Runner<'_> {
    /// Poll `probe` until it returns `Some`, or time out. A probe that fails transiently
    /// even after the call's own retries (a cloud slow to answer under load, a 5xx) is one
    /// missed look, not the end of the wait: the transition goes on in the cloud, and the
    /// next poll sees it. Any other error ends the wait.
    pub(super) async fn wait_for<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: F,
    ) -> Result<T, FlowError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, FlowError>>,
    {
        let start = Instant::now();
        let mut last_line = Instant::now();
        // When the previous probe answered "not yet": the transition ended after it.
        let mut last_no: Option<Instant> = None;
        loop {
            let asked = Instant::now();
            match probe().await {
                Ok(Some(v)) => {
                    if let Some(no) = last_no {
                        self.slack
                            .set(self.slack.get() + asked.saturating_duration_since(no));
                    }
                    return Ok(v);
                }
                Ok(None) => last_no = Some(Instant::now()),
                Err(FlowError::Cloud(e)) if e.is_transient() && start.elapsed() < timeout => {
                    tracing::warn!(waiting_for = what, error = %e, "a poll failed; polling on");
                }
                Err(e) => return Err(e),
            }
            if start.elapsed() >= timeout {
                return Err(FlowError::Timeout {
                    what: what.to_owned(),
                    waited: timeout,
                });
            }
            if last_line.elapsed() >= PROGRESS_EVERY {
                last_line = Instant::now();
                tracing::info!(
                    waiting_for = what,
                    elapsed = %humantime::format_duration(Duration::from_secs(start.elapsed().as_secs())),
                    timeout = %humantime::format_duration(timeout),
                    "still waiting"
                );
            }
            tokio::time::sleep(self.waits.poll).await;
        }
    }
}
