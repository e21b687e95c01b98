//! `snapshot.schedule`: cfy-init takes snapshots itself every interval (plus a random jitter),
//! keeps `snapshot.keep` of them, and uploads each to Swift when `snapshot.remote` is set
//! (from a child process, see [`super::remote`]). It replaces the chart's sidecar loop.

use std::sync::Arc;
use std::time::Duration;

use super::remote::ScheduleConfig;
use super::{Engine, SnapshotError};
use crate::config::Context;

/// The delay before the next scheduled snapshot: `every` plus up to `jitter`.
pub fn next_delay(s: &ScheduleConfig) -> Duration {
    let jitter = if s.jitter.is_zero() {
        Duration::ZERO
    } else {
        s.jitter.mul_f64(rand::random::<f64>())
    };
    s.every + jitter
}

/// Run the schedule until the task is dropped. A snapshot that finds another job running is
/// skipped (the next interval tries again); failures are logged and counted by the engine.
pub async fn run(ctx: Context, engine: Arc<Engine>, via_reaper: bool) {
    let Some(sched) = ctx.config.snapshot.schedule.clone() else {
        return;
    };
    tracing::info!(every = ?sched.every, jitter = ?sched.jitter, upload = sched.upload && ctx.config.snapshot.remote.is_some(), "snapshot schedule on");
    loop {
        tokio::time::sleep(next_delay(&sched)).await;
        let job = match engine.begin_snapshot() {
            Ok(j) => j,
            Err(SnapshotError::Busy(other)) => {
                tracing::warn!(%other, "scheduled snapshot skipped: another job is running");
                continue;
            }
            Err(e) => {
                tracing::error!("scheduled snapshot: {e}");
                continue;
            }
        };
        let meta = match engine.run_snapshot(job).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("scheduled snapshot failed: {e}");
                continue;
            }
        };
        tracing::info!(
            id = meta.id,
            size = meta.size,
            pause_ms = meta.pause_ms,
            "scheduled snapshot taken"
        );
        if sched.upload && ctx.config.snapshot.remote.is_some() {
            if let Err(e) = super::remote::upload_in_child(&ctx, &meta.id, via_reaper).await {
                tracing::error!(id = meta.id, "scheduled upload to Swift failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bound() {
        let s = ScheduleConfig {
            every: Duration::from_secs(60),
            jitter: Duration::from_secs(10),
            upload: true,
        };
        for _ in 0..100 {
            let d = next_delay(&s);
            assert!(d >= Duration::from_secs(60) && d <= Duration::from_secs(70));
        }
        let s = ScheduleConfig {
            jitter: Duration::ZERO,
            ..s
        };
        assert_eq!(next_delay(&s), Duration::from_secs(60));
    }
}
