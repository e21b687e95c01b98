//! The watcher's counters, exported as a Prometheus text file replaced atomically.

use std::collections::BTreeMap;
use std::path::Path;

use super::decide::Decision;

/// Counters exported in the metrics file.
#[derive(Debug, Default)]
pub(super) struct Metrics {
    pub(super) ticks: u64,
    pub(super) decisions: BTreeMap<Decision, u64>,
    pub(super) recoveries: u64,
    pub(super) recovery_failures: u64,
    pub(super) consecutive_failures: u32,
    pub(super) last_recovery: u64,
    pub(super) manager_up: bool,
    pub(super) cloud_reachable: bool,
    pub(super) leader: bool,
    /// Recoveries decided but not started: another watcher's lease write won.
    pub(super) lease_lost: u64,
}

impl Metrics {
    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        let b = |v: bool| u8::from(v).to_string();
        gauge(
            "cfy_recover_watch_ticks_total",
            "Intervals observed.",
            "counter",
            self.ticks.to_string(),
        );
        gauge(
            "cfy_recover_watch_recoveries_total",
            "Recoveries started.",
            "counter",
            self.recoveries.to_string(),
        );
        gauge(
            "cfy_recover_watch_recovery_failures_total",
            "Recoveries that stopped.",
            "counter",
            self.recovery_failures.to_string(),
        );
        gauge(
            "cfy_recover_watch_lease_lost_total",
            "Recoveries not started because another watcher's lease write won.",
            "counter",
            self.lease_lost.to_string(),
        );
        gauge(
            "cfy_recover_watch_consecutive_failures",
            "Failed manager probes in a row.",
            "gauge",
            self.consecutive_failures.to_string(),
        );
        gauge(
            "cfy_recover_watch_last_recovery_timestamp_seconds",
            "Start of the last recovery (0: none).",
            "gauge",
            self.last_recovery.to_string(),
        );
        gauge(
            "cfy_recover_watch_manager_up",
            "The manager answered the last probe.",
            "gauge",
            b(self.manager_up),
        );
        gauge(
            "cfy_recover_watch_cloud_reachable",
            "The cloud answered the last query.",
            "gauge",
            b(self.cloud_reachable),
        );
        gauge(
            "cfy_recover_watch_leader",
            "This watcher holds the lease.",
            "gauge",
            b(self.leader),
        );
        out.push_str("# HELP cfy_recover_watch_decisions_total Decisions by kind.\n# TYPE cfy_recover_watch_decisions_total counter\n");
        for d in Decision::ALL {
            let n = self.decisions.get(&d).copied().unwrap_or(0);
            out.push_str(&format!(
                "cfy_recover_watch_decisions_total{{decision=\"{}\"}} {n}\n",
                d.name()
            ));
        }
        out
    }

    /// Replaced atomically, so a scraper never reads half a file.
    pub(super) fn write(&self, path: &Path) {
        let tmp = path.with_extension("tmp");
        let result = std::fs::write(&tmp, self.render()).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the metrics file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_every_decision() {
        let text = Metrics::default().render();
        for d in Decision::ALL {
            assert!(
                text.contains(&format!("decision=\"{}\"", d.name())),
                "{text}"
            );
        }
    }
}
