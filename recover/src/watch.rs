//! `cfy-recover watch`: the watcher that heals. Owns the decision (a pure state machine:
//! manager health + the cloud's view + the lease + the clock -> decision and reason), the
//! lease that keeps one watcher at a time, the metrics file, and the polling loop. The
//! recovery itself is the caller's (`recover --inventory FILE`'s code path), handed in as a
//! function, so this module knows nothing of the command line.
//!
//! Safety rules, in order: a manager that answers resets the count; a cloud that cannot be
//! asked (a partition, an error) is never acted on; the cloud must confirm the server is
//! unhealthy (ERROR, SHUTOFF, gone, its compute host down); then N failed intervals, the
//! cooldown since the last recovery, and the lease must all agree.
//!
//! The lease lives in the description of the manager's pre-created Neutron port: that port
//! survives the server's deletion and the recovery itself (keeping it is the point of the
//! rebuild), so the lease outlives both the manager's server and the watcher's host, and
//! needs no object store. It holds the owner id, an expiry and the time of the last
//! recovery (so the cooldown survives a watcher moving hosts). The write is read back
//! before acting, which narrows but does not close the race of two watchers taking an
//! expired lease in the same instant; Neutron's `If-Match: revision_number` would make it a
//! strict compare-and-swap (not used yet: the cloud client sends no conditional headers).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cloud::Cloud;
use crate::inventory::Inventory;
use crate::manager::Manager;

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

/// The watcher lease as stored (in the port description).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    /// Unix seconds after which another watcher may take over.
    pub expires: u64,
    /// Unix seconds of the last recovery started by any watcher (0: none).
    pub last_recovery: u64,
}

const LEASE_PREFIX: &str = "cfy-recover-watch";

impl Lease {
    pub fn encode(&self) -> String {
        format!(
            "{LEASE_PREFIX} owner={} expires={} last_recovery={}",
            self.owner, self.expires, self.last_recovery
        )
    }

    /// `None` for a description that is not a lease (no watcher ever held this port).
    pub fn decode(s: &str) -> Option<Lease> {
        let rest = s.strip_prefix(LEASE_PREFIX)?;
        let fields: BTreeMap<&str, &str> = rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        Some(Lease {
            owner: fields.get("owner")?.to_string(),
            expires: fields.get("expires")?.parse().ok()?,
            last_recovery: fields
                .get("last_recovery")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    }
}

/// What the watcher does about the lease this interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// Write this lease (a renewal of ours, or a take-over of a free or expired one).
    Claim(Lease),
    /// Another live watcher holds it: watch, never act.
    Yield { holder: String, expires: u64 },
}

/// Renew our lease, take a free or expired one, or yield to a live holder.
pub fn lease_step(current: Option<&Lease>, me: &str, now: u64, ttl: Duration) -> LeaseStep {
    let last_recovery = current.map_or(0, |l| l.last_recovery);
    match current {
        Some(l) if l.owner != me && l.expires > now => LeaseStep::Yield {
            holder: l.owner.clone(),
            expires: l.expires,
        },
        _ => LeaseStep::Claim(Lease {
            owner: me.to_owned(),
            expires: now + ttl.as_secs().max(1),
            last_recovery,
        }),
    }
}

/// What the watcher knows of the lease once it tried to claim it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseView {
    Ours,
    HeldBy(String),
    /// The lease could not be read or written (the cloud is unreachable, or a race).
    Unknown(String),
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

/// Everything the watcher is told by its caller.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub inventory: PathBuf,
    pub interval: Duration,
    pub policy: Policy,
    pub lease_ttl: Duration,
    pub owner: String,
    pub manager_port: u16,
    pub probe_timeout: Duration,
    pub metrics_file: Option<PathBuf>,
    /// Stop after this many recoveries (tests and one-shot runs); `None`: forever.
    pub max_recoveries: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Inventory(#[from] crate::inventory::InventoryError),
    #[error("{0}: the inventory names no port to hold the watcher lease")]
    NoPort(String),
}

/// Counters exported in the metrics file.
#[derive(Debug, Default)]
struct Metrics {
    ticks: u64,
    decisions: BTreeMap<Decision, u64>,
    recoveries: u64,
    recovery_failures: u64,
    consecutive_failures: u32,
    last_recovery: u64,
    manager_up: bool,
    cloud_reachable: bool,
    leader: bool,
}

impl Metrics {
    fn render(&self) -> String {
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
    fn write(&self, path: &Path) {
        let tmp = path.with_extension("tmp");
        let result = std::fs::write(&tmp, self.render()).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the metrics file");
        }
    }
}

/// Watch until `max_recoveries` (or forever). `recover` runs the inventory's recovery and
/// says whether it finished.
pub async fn run<F, Fut>(
    cloud: &Cloud,
    opts: &WatchOptions,
    mut recover: F,
) -> Result<(), WatchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut state = State::default();
    let mut metrics = Metrics::default();
    tracing::info!(owner = %opts.owner, inventory = %opts.inventory.display(), interval = ?opts.interval,
        failures = opts.policy.failures, cooldown = ?opts.policy.cooldown, "watcher started");
    loop {
        let inv = Inventory::load(&opts.inventory)?;
        let lease_port = lease_port(&inv, &opts.inventory)?;
        let now = crate::flow::now_unix();
        let manager = probe_manager(&inv, opts).await;
        let cloud_view = server_view(cloud, &inv.server.id).await;
        let lease = claim_lease(cloud, &lease_port, opts, now, &mut state).await;
        let obs = Observation {
            manager,
            cloud: cloud_view,
            lease,
            now,
        };
        let v = decide(&mut state, &opts.policy, &obs);
        tracing::info!(decision = v.decision.name(), server = %inv.server.id, "{}", v.reason);
        record(&mut metrics, &state, &obs, v.decision);
        if v.decision == Decision::Recover {
            state.last_recovery = now;
            metrics.last_recovery = now;
            metrics.recoveries += 1;
            write_last_recovery(cloud, &lease_port, opts, now).await;
            if let Some(f) = &opts.metrics_file {
                metrics.write(f);
            }
            match recover().await {
                Ok(()) => {
                    tracing::info!(decision = "recovered", "recovery finished; cooldown starts")
                }
                Err(e) => {
                    metrics.recovery_failures += 1;
                    tracing::error!(decision = "recovery_failed", error = %e, "recovery stopped; no other attempt within the cooldown");
                }
            }
            state.consecutive_failures = 0;
        }
        if let Some(f) = &opts.metrics_file {
            metrics.write(f);
        }
        if opts.max_recoveries.is_some_and(|m| metrics.recoveries >= m) {
            tracing::info!("watcher stops: --max-recoveries reached");
            return Ok(());
        }
        tokio::time::sleep(opts.interval).await;
    }
}

fn record(m: &mut Metrics, state: &State, obs: &Observation, d: Decision) {
    m.ticks += 1;
    *m.decisions.entry(d).or_default() += 1;
    m.consecutive_failures = state.consecutive_failures;
    m.manager_up = obs.manager == ManagerHealth::Up;
    m.cloud_reachable = !matches!(obs.cloud, CloudView::Unreachable(_));
    m.leader = obs.lease == LeaseView::Ours;
    m.last_recovery = state.last_recovery;
}

/// The first pre-created port: it survives the server and the recovery.
fn lease_port(inv: &Inventory, file: &Path) -> Result<String, WatchError> {
    inv.ports
        .iter()
        .find(|p| !p.nova_created)
        .or_else(|| inv.ports.first())
        .map(|p| p.id.clone())
        .ok_or_else(|| WatchError::NoPort(file.display().to_string()))
}

/// Every address of the manager (fixed and floating); up when any answers `/healthz`.
fn manager_addresses(inv: &Inventory) -> Vec<String> {
    let fixed = inv
        .ports
        .iter()
        .flat_map(|p| p.fixed_ips.iter().map(|f| f.ip_address.clone()));
    let floating = inv.floating_ips.iter().map(|f| f.address.clone());
    fixed.chain(floating).collect()
}

async fn probe_manager(inv: &Inventory, opts: &WatchOptions) -> ManagerHealth {
    let mut failures = Vec::new();
    for addr in manager_addresses(inv) {
        let url = format!("http://{}", host_port(&addr, opts.manager_port));
        let m = match Manager::new(&url, None) {
            Ok(m) => m,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        match m.healthy(opts.probe_timeout).await {
            Ok(()) => return ManagerHealth::Up,
            Err(e) => failures.push(format!("{url}: {e}")),
        }
    }
    if failures.is_empty() {
        return ManagerHealth::Down("the inventory lists no address".into());
    }
    ManagerHealth::Down(failures.join("; "))
}

fn host_port(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

async fn server_view(cloud: &Cloud, id: &str) -> CloudView {
    match cloud.server(id).await {
        Ok(s) => classify_server(s.as_ref()),
        Err(e) => CloudView::Unreachable(e.to_string()),
    }
}

/// Read the lease, renew or take it, and read it back: ours only when our id is there.
async fn claim_lease(
    cloud: &Cloud,
    port: &str,
    opts: &WatchOptions,
    now: u64,
    state: &mut State,
) -> LeaseView {
    let current = match read_lease(cloud, port).await {
        Ok(l) => l,
        Err(e) => return LeaseView::Unknown(e),
    };
    if let Some(l) = &current {
        state.last_recovery = state.last_recovery.max(l.last_recovery);
    }
    let mine = match lease_step(current.as_ref(), &opts.owner, now, opts.lease_ttl) {
        LeaseStep::Yield { holder, .. } => return LeaseView::HeldBy(holder),
        LeaseStep::Claim(mut l) => {
            l.last_recovery = l.last_recovery.max(state.last_recovery);
            l
        }
    };
    if let Err(e) = cloud.set_port_description(port, &mine.encode()).await {
        return LeaseView::Unknown(format!("cannot write the lease: {e}"));
    }
    match read_lease(cloud, port).await {
        Ok(Some(l)) if l.owner == opts.owner => LeaseView::Ours,
        Ok(Some(l)) => LeaseView::HeldBy(l.owner),
        Ok(None) => LeaseView::Unknown("the lease vanished after writing it".into()),
        Err(e) => LeaseView::Unknown(e),
    }
}

async fn read_lease(cloud: &Cloud, port: &str) -> Result<Option<Lease>, String> {
    match cloud.port(port).await {
        Ok(Some(p)) => Ok(Lease::decode(p.description.as_deref().unwrap_or(""))),
        Ok(None) => Err(format!("lease port {port} not found")),
        Err(e) => Err(format!("cannot read the lease: {e}")),
    }
}

/// Record the recovery in the lease before starting it, so no other watcher starts one
/// within the cooldown even if this one dies mid-recovery. The recovery holds the lease
/// for its own duration (a long TTL), as it may take longer than a few intervals.
async fn write_last_recovery(cloud: &Cloud, port: &str, opts: &WatchOptions, now: u64) {
    let lease = Lease {
        owner: opts.owner.clone(),
        expires: now + opts.lease_ttl.as_secs().max(1) + opts.policy.cooldown.as_secs(),
        last_recovery: now,
    };
    if let Err(e) = cloud.set_port_description(port, &lease.encode()).await {
        tracing::warn!(error = %e, "cannot record the recovery in the lease");
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
    fn live_lease_of_another_is_yielded_to() {
        let other = Lease {
            owner: "b".into(),
            expires: 200,
            last_recovery: 0,
        };
        let step = lease_step(Some(&other), "a", 100, Duration::from_secs(60));
        assert_eq!(
            step,
            LeaseStep::Yield {
                holder: "b".into(),
                expires: 200
            }
        );
    }

    #[test]
    fn expired_lease_is_taken_over_keeping_the_last_recovery() {
        let other = Lease {
            owner: "b".into(),
            expires: 99,
            last_recovery: 50,
        };
        let step = lease_step(Some(&other), "a", 100, Duration::from_secs(60));
        assert_eq!(
            step,
            LeaseStep::Claim(Lease {
                owner: "a".into(),
                expires: 160,
                last_recovery: 50
            })
        );
    }

    #[test]
    fn free_or_own_lease_is_claimed() {
        let free = lease_step(None, "a", 100, Duration::from_secs(60));
        assert!(matches!(free, LeaseStep::Claim(ref l) if l.owner == "a" && l.expires == 160));
        let mine = Lease {
            owner: "a".into(),
            expires: 130,
            last_recovery: 0,
        };
        let renew = lease_step(Some(&mine), "a", 100, Duration::from_secs(60));
        assert!(matches!(renew, LeaseStep::Claim(ref l) if l.expires == 160));
    }

    #[test]
    fn lease_round_trips_and_foreign_descriptions_are_not_leases() {
        let l = Lease {
            owner: "host-1:42".into(),
            expires: 1234,
            last_recovery: 99,
        };
        assert_eq!(Lease::decode(&l.encode()), Some(l));
        assert_eq!(Lease::decode("the manager's port"), None);
        assert_eq!(Lease::decode(""), None);
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
