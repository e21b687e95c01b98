//! The watcher's decision: a pure state machine from one interval's observation (the
//! manager's health, the cloud's view of its server, the lease, the clock) and the state
//! carried between intervals to a [`Decision`] and the reason for it. No I/O here, so every
//! safety rule is a unit test.

use std::time::Duration;

use super::lease::LeaseView;

/// How the manager answered this interval (any of its addresses answering counts as up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagerHealth {
    Up,
    Down(String),
}

/// What the cloud says about the manager's server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudView {
    /// The server is fine as far as Nova knows (e.g. ACTIVE on a host that is UP).
    Healthy(String),
    /// The cloud confirms a failure: ERROR, SHUTOFF, deleted, or its compute service down.
    Unhealthy(String),
    /// The cloud could not be asked: never act on this (it may be our own partition).
    Unreachable(String),
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failed intervals in a row before a recovery is considered.
    pub failures: u32,
    /// Least time between two recoveries.
    pub cooldown: Duration,
}

/// The state carried from one interval to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub consecutive_failures: u32,
    /// Unix seconds of the last recovery (ours, or the lease's record of anyone's).
    pub last_recovery: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Decision {
    ManagerUp,
    CloudUnreachable,
    Counting,
    CloudSaysHealthy,
    Cooldown,
    NotLeader,
    Recover,
}

impl Decision {
    pub const ALL: [Decision; 7] = [
        Decision::ManagerUp,
        Decision::CloudUnreachable,
        Decision::Counting,
        Decision::CloudSaysHealthy,
        Decision::Cooldown,
        Decision::NotLeader,
        Decision::Recover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Decision::ManagerUp => "manager_up",
            Decision::CloudUnreachable => "cloud_unreachable",
            Decision::Counting => "counting",
            Decision::CloudSaysHealthy => "cloud_says_healthy",
            Decision::Cooldown => "cooldown",
            Decision::NotLeader => "not_leader",
            Decision::Recover => "recover",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: String,
}

/// One observed interval.
#[derive(Debug, Clone)]
pub struct Observation {
    pub manager: ManagerHealth,
    pub cloud: CloudView,
    pub lease: LeaseView,
    pub now: u64,
}

fn verdict(decision: Decision, reason: impl Into<String>) -> Verdict {
    Verdict {
        decision,
        reason: reason.into(),
    }
}

/// The state machine: updates the failure count and says what to do, and why.
pub fn decide(state: &mut State, policy: &Policy, obs: &Observation) -> Verdict {
    let why_down = match &obs.manager {
        ManagerHealth::Up => {
            state.consecutive_failures = 0;
            return verdict(Decision::ManagerUp, "manager answers /healthz");
        }
        ManagerHealth::Down(why) => why,
    };
    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
    let cloud_says = match &obs.cloud {
        CloudView::Unreachable(why) => {
            return verdict(
                Decision::CloudUnreachable,
                format!("cloud unreachable, not acting: {why}"),
            );
        }
        CloudView::Healthy(what) => {
            return verdict(
                Decision::CloudSaysHealthy,
                format!("manager down ({why_down}) but the cloud says the server is healthy ({what}): not acting"),
            );
        }
        CloudView::Unhealthy(what) => what,
    };
    if state.consecutive_failures < policy.failures {
        return verdict(
            Decision::Counting,
            format!(
                "manager down ({why_down}), server {cloud_says}: failure {} of {}",
                state.consecutive_failures, policy.failures
            ),
        );
    }
    if let Some(left) = cooldown_left(state.last_recovery, policy.cooldown, obs.now) {
        return verdict(
            Decision::Cooldown,
            format!("server {cloud_says}, but the last recovery was less than the cooldown ago: {left}s left"),
        );
    }
    match &obs.lease {
        LeaseView::Ours => verdict(
            Decision::Recover,
            format!(
                "manager down for {} intervals ({why_down}) and server {cloud_says}: recovering",
                state.consecutive_failures
            ),
        ),
        LeaseView::HeldBy(holder) => verdict(
            Decision::NotLeader,
            format!("server {cloud_says}, but watcher {holder} holds the lease: not acting"),
        ),
        LeaseView::Unknown(why) => verdict(
            Decision::NotLeader,
            format!("server {cloud_says}, but the lease is not ours for sure ({why}): not acting"),
        ),
    }
}

/// Seconds of cooldown left, `None` when a recovery is allowed.
fn cooldown_left(last_recovery: u64, cooldown: Duration, now: u64) -> Option<u64> {
    if last_recovery == 0 {
        return None;
    }
    let until = last_recovery.saturating_add(cooldown.as_secs());
    (until > now).then(|| until - now)
}

/// Nova's server (or its absence) as a [`CloudView`]. `host_status` (2.16+) is how a
/// non-admin sees its compute service forced down.
pub fn classify_server(server: Option<&crate::cloud::models::Server>) -> CloudView {
    let Some(s) = server else {
        return CloudView::Unhealthy("deleted (404)".into());
    };
    match (s.status.as_str(), s.host_status.as_deref()) {
        (status @ ("ERROR" | "SHUTOFF" | "DELETED" | "SOFT_DELETED"), _) => {
            CloudView::Unhealthy(status.to_owned())
        }
        (status, Some(host @ ("DOWN" | "UNKNOWN"))) => {
            CloudView::Unhealthy(format!("{status} on a compute host that is {host}"))
        }
        (status, host) => CloudView::Healthy(format!(
            "{status}, host {}",
            host.filter(|h| !h.is_empty()).unwrap_or("unknown")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        failures: 3,
        cooldown: Duration::from_secs(600),
    };

    fn obs(manager: ManagerHealth, cloud: CloudView, lease: LeaseView, now: u64) -> Observation {
        Observation {
            manager,
            cloud,
            lease,
            now,
        }
    }

    fn down() -> ManagerHealth {
        ManagerHealth::Down("connection refused".into())
    }

    fn error() -> CloudView {
        CloudView::Unhealthy("ERROR".into())
    }

    fn decisions(state: &mut State, seq: &[Observation]) -> Vec<Decision> {
        seq.iter()
            .map(|o| decide(state, &POLICY, o).decision)
            .collect()
    }

    #[test]
    fn manager_down_and_server_error_recovers_after_n_intervals() {
        let mut s = State::default();
        let seq: Vec<_> = (0..3)
            .map(|t| obs(down(), error(), LeaseView::Ours, 1000 + t))
            .collect();
        let d = decisions(&mut s, &seq);
        assert_eq!(
            d,
            [Decision::Counting, Decision::Counting, Decision::Recover]
        );
    }

    #[test]
    fn cloud_unreachable_never_acts() {
        let mut s = State::default();
        let unreachable = CloudView::Unreachable("connect timeout".into());
        for t in 0..50 {
            let v = decide(
                &mut s,
                &POLICY,
                &obs(down(), unreachable.clone(), LeaseView::Ours, 1000 + t),
            );
            assert_eq!(v.decision, Decision::CloudUnreachable);
            assert!(
                v.reason.starts_with("cloud unreachable, not acting"),
                "{}",
                v.reason
            );
        }
    }

    #[test]
    fn manager_up_resets_the_counter() {
        let mut s = State::default();
        let seq = [
            obs(down(), error(), LeaseView::Ours, 1),
            obs(down(), error(), LeaseView::Ours, 2),
            obs(ManagerHealth::Up, error(), LeaseView::Ours, 3),
            obs(down(), error(), LeaseView::Ours, 4),
            obs(down(), error(), LeaseView::Ours, 5),
        ];
        let d = decisions(&mut s, &seq);
        assert_eq!(d[2], Decision::ManagerUp);
        assert!(!d.contains(&Decision::Recover), "{d:?}");
        assert_eq!(s.consecutive_failures, 2);
    }

    #[test]
    fn cloud_saying_healthy_does_not_act() {
        let mut s = State::default();
        let healthy = CloudView::Healthy("ACTIVE, host UP".into());
        let seq: Vec<_> = (0..5)
            .map(|t| obs(down(), healthy.clone(), LeaseView::Ours, t))
            .collect();
        assert!(decisions(&mut s, &seq)
            .iter()
            .all(|d| *d == Decision::CloudSaysHealthy));
    }

    #[test]
    fn cooldown_is_respected_then_expires() {
        let mut s = State {
            consecutive_failures: 10,
            last_recovery: 1000,
        };
        let v = decide(
            &mut s,
            &POLICY,
            &obs(down(), error(), LeaseView::Ours, 1300),
        );
        assert_eq!(v.decision, Decision::Cooldown, "{}", v.reason);
        assert!(v.reason.contains("300s left"), "{}", v.reason);
        let v = decide(
            &mut s,
            &POLICY,
            &obs(down(), error(), LeaseView::Ours, 1600),
        );
        assert_eq!(v.decision, Decision::Recover, "{}", v.reason);
    }

    #[test]
    fn lease_held_by_another_watcher_does_not_act() {
        let mut s = State::default();
        let held = LeaseView::HeldBy("watcher-b".into());
        let seq: Vec<_> = (0..5)
            .map(|t| obs(down(), error(), held.clone(), t))
            .collect();
        let d = decisions(&mut s, &seq);
        assert_eq!(d.last(), Some(&Decision::NotLeader));
        assert!(!d.contains(&Decision::Recover));
    }

    #[test]
    fn server_states_are_classified() {
        let server = |status: &str, host: Option<&str>| {
            let mut v = serde_json::json!({"id": "s", "name": "m", "status": status});
            if let Some(h) = host {
                v["host_status"] = h.into();
            }
            serde_json::from_value::<crate::cloud::models::Server>(v).unwrap()
        };
        assert!(matches!(classify_server(None), CloudView::Unhealthy(_)));
        assert!(matches!(
            classify_server(Some(&server("ERROR", None))),
            CloudView::Unhealthy(_)
        ));
        assert!(matches!(
            classify_server(Some(&server("SHUTOFF", Some("UP")))),
            CloudView::Unhealthy(_)
        ));
        assert!(matches!(
            classify_server(Some(&server("ACTIVE", Some("DOWN")))),
            CloudView::Unhealthy(_)
        ));
        assert!(matches!(
            classify_server(Some(&server("ACTIVE", Some("UP")))),
            CloudView::Healthy(_)
        ));
        assert!(matches!(
            classify_server(Some(&server("ACTIVE", None))),
            CloudView::Healthy(_)
        ));
    }
}
