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
//! The parts: [`decide`] (the state machine), [`lease`] (one watcher at a time), [`metrics`]
//! (the exported counters); this file is the polling loop and the probes.

mod decide;
mod lease;
mod metrics;

pub use decide::*;
pub use lease::{lease_step, Lease, LeaseStep, LeaseView};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cloud::Cloud;
use crate::inventory::Inventory;
use crate::manager::Manager;
use lease::{claim_lease, record_recovery};
use metrics::Metrics;

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
            heal(
                cloud,
                opts,
                &lease_port,
                now,
                &mut state,
                &mut metrics,
                &mut recover,
            )
            .await;
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

/// One recovery, started only once its record in the lease won (so no two watchers start
/// one), then the cooldown.
async fn heal<F, Fut>(
    cloud: &Cloud,
    opts: &WatchOptions,
    lease_port: &str,
    now: u64,
    state: &mut State,
    metrics: &mut Metrics,
    recover: &mut F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let view = record_recovery(cloud, lease_port, opts, now).await;
    if view != LeaseView::Ours {
        metrics.lease_lost += 1;
        tracing::warn!(decision = "not_leader", "recovery not started: {view}");
        return;
    }
    state.last_recovery = now;
    metrics.last_recovery = now;
    metrics.recoveries += 1;
    if let Some(f) = &opts.metrics_file {
        metrics.write(f);
    }
    match recover().await {
        Ok(()) => tracing::info!(decision = "recovered", "recovery finished; cooldown starts"),
        Err(e) => {
            metrics.recovery_failures += 1;
            tracing::error!(decision = "recovery_failed", error = %e, "recovery stopped; no other attempt within the cooldown");
        }
    }
    state.consecutive_failures = 0;
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
