//! What `plan` checks before anything is deleted, beyond the resources themselves: the
//! compute quota (`GET /limits`: instances, cores, RAM must allow the new server once the
//! old one is gone) and the reachability of the address the recovery will wait on (and
//! whether another of the manager's addresses would do better). Each finding says what to
//! change.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::cloud::{Cloud, Service};
use crate::flow::FlowError;
use crate::journal::Journal;

/// The compute quota, read from Nova's `/limits` (`-1`: unlimited).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub max: i64,
    pub used: i64,
}

impl Usage {
    fn from(abs: &Value, max: &str, used: &str) -> Usage {
        Usage {
            max: abs[max].as_i64().unwrap_or(-1),
            used: abs[used].as_i64().unwrap_or(0),
        }
    }
    /// Room for `need` more once `freed` are released.
    fn fits(self, need: i64, freed: i64) -> bool {
        self.max < 0 || self.used - freed + need <= self.max
    }
}

/// Refuse (before any change) when the new server would exceed the compute quota.
/// `old_exists`: the old server still counts and is deleted first, freeing its share.
/// A cloud that does not show its limits (403, 404) gets a warning back instead.
pub async fn quota(
    cloud: &Cloud,
    flavor: Option<(i64, i64)>,
    old_exists: bool,
) -> Result<Option<String>, FlowError> {
    let v = match cloud
        .call(
            Service::Compute,
            reqwest::Method::GET,
            "/limits",
            None,
            crate::cloud::Retry::Idempotent,
        )
        .await
    {
        Ok(v) => v,
        Err(e) if matches!(e.status(), Some(403 | 404)) => {
            return Ok(Some(format!(
                "the compute quota could not be read ({e}): a full quota would stop the recovery after the old server is deleted"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let abs = &v["limits"]["absolute"];
    let project_hint = cloud.project_id().await.unwrap_or_else(|| "PROJECT".into());
    let freed = i64::from(old_exists);
    let (cores, ram) = flavor.unwrap_or((0, 0));
    let checks = [
        (
            "instances",
            Usage::from(abs, "maxTotalInstances", "totalInstancesUsed"),
            1,
            freed,
            "--instances",
        ),
        (
            "cores",
            Usage::from(abs, "maxTotalCores", "totalCoresUsed"),
            cores,
            freed * cores,
            "--cores",
        ),
        (
            "RAM (MiB)",
            Usage::from(abs, "maxTotalRAMSize", "totalRAMUsed"),
            ram,
            freed * ram,
            "--ram",
        ),
    ];
    for (what, u, need, freed, flag) in checks {
        if !u.fits(need, freed) {
            let want = u.used - freed + need;
            return Err(FlowError::Refused(format!(
                "the compute quota has no room for the new server: {what} {} of {} used, {need} needed{}; nothing was changed. Raise it (`openstack quota set {flag} {want} {project_hint}`) or free some, then run again",
                u.used,
                u.max,
                if freed > 0 { format!(" after the old server frees {freed}") } else { String::new() },
            )));
        }
    }
    Ok(None)
}

/// How a TCP connect to the manager's address went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Something listens.
    Answers,
    /// The host answered but nothing listens (a dead manager on a reachable address).
    Refused,
    /// No answer at all (no route, filtered, or nothing at that address).
    Unreachable,
}

pub fn reach(addr: &str, port: u16) -> Reach {
    let Ok(ip) = addr.trim_matches(['[', ']']).parse::<std::net::IpAddr>() else {
        return Reach::Unreachable;
    };
    match TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(2)) {
        Ok(_) => Reach::Answers,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Reach::Refused,
        Err(_) => Reach::Unreachable,
    }
}

/// Warnings about the address `wait-ready` will poll, with the fix when another of the
/// manager's addresses is reachable from here.
pub fn reachability(j: &Journal, manager_answers: bool) -> Vec<String> {
    let Some((host, port)) = host_port(&j.manager.url) else {
        return vec![];
    };
    if manager_answers {
        return vec![];
    }
    let fixed = j
        .ports
        .first()
        .and_then(|p| p.fixed_ips.first())
        .map(|f| f.ip_address.clone());
    let floating = j.floating_ips.first().map(|f| f.address.clone());
    let here = reach(&host, port);
    let mut out = Vec::new();
    let other = [("fixed", fixed), ("floating", floating)]
        .into_iter()
        .filter_map(|(k, a)| a.filter(|a| *a != host).map(|a| (k, a)))
        .find(|(_, a)| reach(a, port) != Reach::Unreachable);
    match (here, other) {
        (Reach::Unreachable, Some((kind, addr))) => out.push(format!(
            "the recovery waits for the manager at {host}:{port}, which this machine cannot reach; its {kind} address {addr} is reachable: pass --manager-address {kind} (or --manager-url)"
        )),
        (Reach::Unreachable, None) => out.push(format!(
            "the recovery waits for the manager at {host}:{port}, which this machine cannot reach (no route or filtered): run cfy-recover where that address is reachable, or pass --manager-url"
        )),
        _ => {}
    }
    out
}

fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let hostport = rest.split('/').next()?;
    let (host, port) = hostport.rsplit_once(':')?;
    Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_room_counts_what_the_old_server_frees() {
        let u = Usage { max: 10, used: 10 };
        assert!(u.fits(1, 1), "the old server's slot is reused");
        assert!(!u.fits(1, 0), "server gone already: no room");
        assert!(Usage { max: -1, used: 99 }.fits(1, 0), "unlimited");
        assert!(!Usage { max: 0, used: 1 }.fits(1, 1));
    }

    #[test]
    fn reach_tells_refused_from_unreachable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(reach("127.0.0.1", port), Reach::Answers);
        drop(l);
        assert_eq!(reach("127.0.0.1", port), Reach::Refused);
        assert_eq!(
            host_port("http://[fd00::1]:8090"),
            Some(("fd00::1".into(), 8090))
        );
        assert_eq!(
            host_port("http://10.0.0.5:8090/x"),
            Some(("10.0.0.5".into(), 8090))
        );
    }
}
