//! The lease that keeps one watcher at a time. It lives in the description of the
//! manager's pre-created Neutron port: that port survives the server's deletion and the
//! recovery itself (keeping it is the point of the rebuild), so the lease outlives both the
//! manager's server and the watcher's host, and needs no object store. It holds the owner
//! id, an expiry and the time of the last recovery (so the cooldown survives a watcher
//! moving hosts).

use std::collections::BTreeMap;
use std::time::Duration;

use super::decide::State;
use super::WatchOptions;
use crate::cloud::Cloud;

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
    /// The lease could not be read or written (the cloud is unreachable, or the port kept
    /// changing under our conditional writes).
    Unknown(String),
}

impl std::fmt::Display for LeaseView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseView::Ours => f.write_str("this watcher holds the lease"),
            LeaseView::HeldBy(holder) => write!(f, "watcher {holder} holds the lease"),
            LeaseView::Unknown(why) => write!(f, "the lease is not ours for sure ({why})"),
        }
    }
}

/// Conditional writes tried per interval while the port changes under us but the lease on
/// it does not (Neutron bumps a port's revision for its own updates too: status, binding).
const SWAP_ATTEMPTS: usize = 4;

/// Renew our lease, or take a free or expired one: ours only when our write won.
pub(super) async fn claim_lease(
    cloud: &Cloud,
    port: &str,
    opts: &WatchOptions,
    now: u64,
    state: &mut State,
) -> LeaseView {
    swap_lease(cloud, port, &opts.owner, |current| {
        if let Some(l) = current {
            state.last_recovery = state.last_recovery.max(l.last_recovery);
        }
        match lease_step(current, &opts.owner, now, opts.lease_ttl) {
            LeaseStep::Yield { holder, .. } => Err(LeaseView::HeldBy(holder)),
            LeaseStep::Claim(mut l) => {
                l.last_recovery = l.last_recovery.max(state.last_recovery);
                Ok(l)
            }
        }
    })
    .await
}

/// Record the recovery in the lease before starting it, so no other watcher starts one
/// within the cooldown even if this one dies mid-recovery. The recovery holds the lease
/// for its own duration (a long TTL), as it may take longer than a few intervals. Only a
/// watcher whose record won may go on to recover.
pub(super) async fn record_recovery(
    cloud: &Cloud,
    port: &str,
    opts: &WatchOptions,
    now: u64,
) -> LeaseView {
    swap_lease(cloud, port, &opts.owner, |current| match current {
        Some(l) if l.owner != opts.owner && l.expires > now => {
            Err(LeaseView::HeldBy(l.owner.clone()))
        }
        _ => Ok(Lease {
            owner: opts.owner.clone(),
            expires: now + opts.lease_ttl.as_secs().max(1) + opts.policy.cooldown.as_secs(),
            last_recovery: now,
        }),
    })
    .await
}

/// Write the lease `next` makes of the current one as a compare-and-swap on the port's
/// `revision_number` (`If-Match`): of two watchers writing at once, one wins and the other
/// gets 412, reads again and sees the winner. A 412 with the lease unchanged (the port
/// changed for another reason) is tried again. A cloud that shows no revision gets a
/// plain write, read back: last writer wins, which narrows the race but cannot close it.
async fn swap_lease(
    cloud: &Cloud,
    port: &str,
    me: &str,
    mut next: impl FnMut(Option<&Lease>) -> Result<Lease, LeaseView>,
) -> LeaseView {
    let mut last_refusal = String::new();
    for _ in 0..SWAP_ATTEMPTS {
        let read = match read_lease(cloud, port).await {
            Ok(r) => r,
            Err(e) => return LeaseView::Unknown(e),
        };
        let lease = match next(read.lease.as_ref()) {
            Ok(l) => l,
            Err(view) => return view,
        };
        let text = lease.encode();
        let written = cloud.set_port_description(port, &text, read.revision).await;
        match written {
            Ok(()) if read.revision.is_some() => return LeaseView::Ours,
            Ok(()) => return read_back(cloud, port, me).await,
            Err(e) if e.is_precondition_failed() => last_refusal = e.to_string(),
            Err(e) => return LeaseView::Unknown(format!("cannot write the lease: {e}")),
        }
    }
    LeaseView::Unknown(format!(
        "the lease port changed under {SWAP_ATTEMPTS} conditional writes in a row (last: {last_refusal})"
    ))
}

/// After a plain write: ours only when our id is what the port now holds.
async fn read_back(cloud: &Cloud, port: &str, me: &str) -> LeaseView {
    match read_lease(cloud, port).await {
        Ok(LeaseRead { lease: Some(l), .. }) if l.owner == me => LeaseView::Ours,
        Ok(LeaseRead { lease: Some(l), .. }) => LeaseView::HeldBy(l.owner),
        Ok(LeaseRead { lease: None, .. }) => {
            LeaseView::Unknown("the lease vanished after writing it".into())
        }
        Err(e) => LeaseView::Unknown(e),
    }
}

/// The lease on the port, and the port's revision it was read at.
struct LeaseRead {
    lease: Option<Lease>,
    revision: Option<u64>,
}

async fn read_lease(cloud: &Cloud, port: &str) -> Result<LeaseRead, String> {
    match cloud.port(port).await {
        Ok(Some(p)) => Ok(LeaseRead {
            lease: Lease::decode(p.description.as_deref().unwrap_or("")),
            revision: p.revision_number,
        }),
        Ok(None) => Err(format!("lease port {port} not found")),
        Err(e) => Err(format!("cannot read the lease: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
