//! `plan`: read the server, its ports, volumes and floating IPs (or, when the server is gone,
//! the manager's inventory) and check everything that could make the recovery fail half-way.
//! Read-only: a bad input is refused before any change. The result is the journal `recover`
//! starts with.

use std::path::Path;

use crate::cloud::models::Server;
use crate::cloud::Cloud;
use crate::flow::*;
use crate::journal::*;
use crate::manager::{self, Manager};

/// Read everything and decide; changes nothing.
pub async fn inspect(cloud: &Cloud, opts: &Options) -> Result<Plan, FlowError> {
    let refused = |m: String| FlowError::Refused(m);
    let found = cloud.find_server(&opts.server).await?;
    let server = match found.len() {
        0 => {
            return match crate::gone::inventory_for(opts)? {
                Some(inv) => crate::gone::inspect_gone(cloud, opts, inv).await,
                None => Err(refused(format!("no server named or with id `{}` in this project (check the name and OS_CLOUD / --os-cloud); if it was deleted, rebuild it from its inventory with --inventory FILE (`cfy-recover inventory save` writes one; every finished recovery refreshes the state directory's)", opts.server))),
            }
        }
        1 => found.into_iter().next().expect("one"),
        n => return Err(refused(format!("{n} servers are named `{}`: pass the id instead", opts.server))),
    };
    if server.locked == Some(true) {
        return Err(refused(format!(
            "server {} is locked{}: Nova refuses to detach or delete it; unlock it first (`openstack server unlock {}`; a lock set by an administrator needs one), then run again",
            server.id,
            server
                .locked_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            server.id
        )));
    }
    let mut warnings = Vec::new();
    let image_id = server.image_id().ok_or_else(|| {
        refused(format!(
            "server {} boots from a volume (no image): cfy-recover rebuilds image-booted managers only",
            server.id
        ))
    })?;
    let flavor_id = resolve_flavor(cloud, &server).await?;
    if let Some(k) = &server.key_name {
        if !cloud.keypair_exists(k).await? {
            return Err(refused(format!("key pair `{k}` of server {} no longer exists: the new server could not be booted with it; re-create it first", server.id)));
        }
    }
    let user_data = match &opts.user_data_file {
        Some(f) => Some(base64_file(f)?),
        None => {
            if server.user_data.is_none() {
                warnings.push("user data is not visible to this account (or empty): the new server boots without it unless --user-data FILE is given".into());
            }
            server.user_data.clone()
        }
    };
    let ports = inspect_ports(cloud, &server, opts.accept_new_ip, &mut warnings).await?;
    let volumes = inspect_volumes(cloud, &server).await?;
    let mut floating_ips = inspect_floating_ips(cloud, &ports).await?;
    if let Some(addr) = &opts.floating_ip {
        named_floating_ip(cloud, addr, &ports, &mut floating_ips).await?;
    }
    let run_id = new_run_id();
    let snapshot = snapshot_record(
        &opts.snapshot,
        opts.remote_snapshots.as_deref(),
        &opts.state_dir,
    )?;
    if let Some(t) = &opts.token_file {
        Manager::new("http://unused", Some(t))?;
    }
    let mut metadata = server.metadata.clone();
    metadata.insert(RUN_METADATA_KEY.into(), run_id.clone());
    let tag = format!("{RUN_TAG_PREFIX}{run_id}");
    let mut tags: Vec<String> = server
        .tags
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !t.starts_with(RUN_TAG_PREFIX))
        .collect();
    tags.push(tag.clone());
    let journal = Journal {
        version: JOURNAL_VERSION,
        run_id,
        started_at: now_unix(),
        os_cloud: opts.os_cloud.clone(),
        old_server: OldServer {
            id: server.id.clone(),
            name: server.name.clone(),
            status: server.status.clone(),
            host_status: server.host_status.clone(),
        },
        spec: ServerSpec {
            name: server.name.clone(),
            flavor_id,
            image_id,
            key_name: server.key_name.clone(),
            security_groups: server
                .security_groups
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|g| g.name)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            metadata,
            user_data,
            availability_zone: server.availability_zone.clone().filter(|z| !z.is_empty()),
            tags,
        },
        new_server_tag: tag,
        new_server_id: None,
        ports,
        volumes,
        floating_ips,
        snapshot,
        manager: manager_target(opts),
        steps: Journal::fresh_steps(),
        finished: false,
        last_error: None,
        inventory_file: opts.inventory.clone(),
        attempts: Vec::new(),
    };
    let mut journal = journal;
    if journal.manager.url.is_empty() {
        journal.manager.url = default_manager_url(&journal, opts)?;
    }
    let manager_answers = Manager::new(&journal.manager.url, None)?.alive().await;
    let flavor = server.flavor["vcpus"]
        .as_i64()
        .zip(server.flavor["ram"].as_i64());
    warnings.extend(crate::checks::quota(cloud, flavor, true).await?);
    warnings.extend(crate::checks::reachability(&journal, manager_answers));
    if journal.snapshot.mode == SnapshotMode::Required && !manager_answers {
        return Err(refused(format!("--take-snapshot: the manager at {} does not answer; pass --snapshot FILE or recover with the volume alone (without --take-snapshot)", journal.manager.url)));
    }
    let actions = describe_actions(&journal, &server, manager_answers);
    Ok(Plan {
        journal,
        manager_answers,
        warnings,
        actions,
    })
}

async fn resolve_flavor(cloud: &Cloud, server: &Server) -> Result<String, FlowError> {
    if let Some(id) = server.flavor_id() {
        return Ok(id);
    }
    let name = server
        .flavor_name()
        .ok_or_else(|| FlowError::Refused(format!("server {} shows no flavor", server.id)))?;
    let flavors = cloud.flavors().await?;
    flavors
        .into_iter()
        .find(|f| f.name == name)
        .map(|f| f.id)
        .ok_or_else(|| {
            FlowError::Refused(format!(
                "flavor `{name}` of server {} no longer exists: the new server could not be booted",
                server.id
            ))
        })
}

pub(crate) fn base64_file(path: &Path) -> Result<String, FlowError> {
    use base64::Engine;
    let data = std::fs::read(path).map_err(|e| {
        FlowError::Refused(format!("{}: cannot read user data: {e}", path.display()))
    })?;
    Ok(base64::engine::general_purpose::STANDARD.encode(data))
}

async fn inspect_ports(
    cloud: &Cloud,
    server: &Server,
    accept_new_ip: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<PortRecord>, FlowError> {
    let ports = cloud.ports_of_device(&server.id).await?;
    // Nova's own list must agree with Neutron's: a port Nova still lists but Neutron shows
    // bound elsewhere is not ours to move. (Servers in ERROR may refuse the listing.)
    for i in cloud.interfaces(&server.id).await.unwrap_or_default() {
        if ports.iter().any(|p| p.id == i.port_id) {
            continue;
        }
        if let Some(p) = cloud.port(&i.port_id).await? {
            if !p.device_id.is_empty() && p.device_id != server.id {
                return Err(FlowError::Refused(format!(
                    "port {} of server {} is attached to {} (`{}`) in Neutron: detach it there first",
                    p.id, server.id, p.device_id, p.device_owner
                )));
            }
        }
    }
    if ports.is_empty() {
        return Err(FlowError::Refused(format!(
            "server {} has no Neutron port: nothing keeps its private IP",
            server.id
        )));
    }
    let mut out = Vec::new();
    for p in ports {
        if p.device_id != server.id {
            return Err(FlowError::Refused(format!(
                "port {} is attached to {} (`{}`), not to server {}",
                p.id, p.device_id, p.device_owner, server.id
            )));
        }
        let nova_created = port_created_by_nova(&p, server);
        let ips: Vec<&str> = p.fixed_ips.iter().map(|f| f.ip_address.as_str()).collect();
        if nova_created && !accept_new_ip {
            return Err(FlowError::Refused(format!(
                "port {} ({}) was created by Nova with the server (created_at {} is not before the server's {}): deleting the server deletes it and the private IP is lost. Re-run with --accept-new-ip to replace it with a pre-created port (cfy-recover asks Neutron for the same IP, which may fail), or re-create the server with a port made in Neutron first",
                p.id,
                ips.join(", "),
                p.created_at.as_deref().unwrap_or("unknown"),
                server.created.as_deref().unwrap_or("unknown"),
            )));
        }
        if nova_created {
            warnings.push(format!(
                "port {} ({}) dies with the server: a new port is created on network {} (same IP requested)",
                p.id,
                ips.join(", "),
                p.network_id
            ));
        }
        out.push(PortRecord {
            id: p.id,
            network_id: p.network_id,
            fixed_ips: p.fixed_ips,
            security_groups: p.security_groups,
            nova_created,
            new_id: None,
            keep_ip: false,
        });
    }
    Ok(out)
}

async fn inspect_volumes(cloud: &Cloud, server: &Server) -> Result<Vec<VolumeRecord>, FlowError> {
    let mut out = Vec::new();
    for v in &server.volumes_attached {
        if v.delete_on_termination {
            return Err(FlowError::Refused(format!("volume {} is attached with delete_on_termination: deleting the server would delete it", v.id)));
        }
        let vol = cloud.volume(&v.id).await?.ok_or_else(|| {
            FlowError::Refused(format!(
                "volume {} listed on the server does not exist in Cinder",
                v.id
            ))
        })?;
        let elsewhere: Vec<&str> = vol
            .attached_to()
            .into_iter()
            .filter(|s| *s != server.id)
            .collect();
        if !elsewhere.is_empty() {
            return Err(FlowError::Refused(format!(
                "volume {} is also attached to {}: detach it there first",
                v.id,
                elsewhere.join(", ")
            )));
        }
        let device = vol
            .attachments
            .iter()
            .find(|a| a.server_id == server.id)
            .and_then(|a| a.device.clone());
        out.push(VolumeRecord {
            id: v.id.clone(),
            device,
        });
    }
    Ok(out)
}

async fn inspect_floating_ips(
    cloud: &Cloud,
    ports: &[PortRecord],
) -> Result<Vec<FloatingIpRecord>, FlowError> {
    let mut out = Vec::new();
    for p in ports {
        for f in cloud.floating_ips_of_port(&p.id).await? {
            if f.port_id.as_deref() != Some(p.id.as_str()) {
                return Err(FlowError::Refused(format!(
                    "floating IP {} is bound to port {}, not to {}",
                    f.floating_ip_address,
                    f.port_id.as_deref().unwrap_or("none"),
                    p.id
                )));
            }
            out.push(FloatingIpRecord {
                id: f.id,
                address: f.floating_ip_address,
                port_id: p.id.clone(),
                fixed_ip: f.fixed_ip_address,
            });
        }
    }
    Ok(out)
}

/// `--floating-ip ADDR`: it must exist and be free or bound to one of the server's ports.
async fn named_floating_ip(
    cloud: &Cloud,
    addr: &str,
    ports: &[PortRecord],
    out: &mut Vec<FloatingIpRecord>,
) -> Result<(), FlowError> {
    if out.iter().any(|f| f.address == addr) {
        return Ok(());
    }
    let f = cloud
        .floating_ips_with_address(addr)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            FlowError::Refused(format!("floating IP {addr} does not exist in this project"))
        })?;
    if let Some(p) = f.port_id.as_deref() {
        if !ports.iter().any(|x| x.id == p) {
            return Err(FlowError::Refused(format!(
                "floating IP {addr} is bound to port {p}, which is not the manager's: free it first"
            )));
        }
    }
    let port = ports.first().expect("at least one port (checked)");
    out.push(FloatingIpRecord {
        id: f.id,
        address: f.floating_ip_address,
        port_id: port.id.clone(),
        fixed_ip: port.fixed_ips.first().map(|x| x.ip_address.clone()),
    });
    Ok(())
}

pub(crate) fn snapshot_record(
    choice: &SnapshotChoice,
    remote: Option<&str>,
    scratch: &Path,
) -> Result<SnapshotRecord, FlowError> {
    let mut record = match choice {
        SnapshotChoice::Auto => SnapshotRecord {
            mode: SnapshotMode::Auto,
            path: None,
            sha256: None,
            remote: None,
        },
        SnapshotChoice::Take => SnapshotRecord {
            mode: SnapshotMode::Required,
            path: None,
            sha256: None,
            remote: None,
        },
        SnapshotChoice::None => SnapshotRecord {
            mode: SnapshotMode::None,
            path: None,
            sha256: None,
            remote: None,
        },
        SnapshotChoice::File(p) => {
            let info = manager::verify_archive(p, scratch)
                .map_err(|e| FlowError::Refused(format!("{e} (--snapshot)")))?;
            let path = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            SnapshotRecord {
                mode: SnapshotMode::File,
                path: Some(path),
                sha256: Some(info.sha256),
                remote: None,
            }
        }
    };
    if record.mode == SnapshotMode::Auto {
        record.remote = remote.map(str::to_string);
    }
    Ok(record)
}

/// `http://ADDRESS:PORT` from the floating IP (when chosen and present) or the fixed IP.
/// The manager to restore into and wait on, as the options name it (the URL may be empty:
/// [`default_manager_url`] then fills it from the journal).
pub(crate) fn manager_target(opts: &Options) -> ManagerTarget {
    ManagerTarget {
        url: opts.manager_url.clone().unwrap_or_default(),
        token_file: opts.token_file.clone(),
        ready_timeout_s: opts.ready_timeout.as_secs().max(1),
    }
}

pub(crate) fn default_manager_url(j: &Journal, opts: &Options) -> Result<String, FlowError> {
    let floating = j.floating_ips.first().map(|f| f.address.clone());
    let fixed = j
        .ports
        .first()
        .and_then(|p| p.fixed_ips.first())
        .map(|f| f.ip_address.clone());
    let addr = match opts.manager_address {
        AddressChoice::Floating => floating.or(fixed),
        AddressChoice::Fixed => fixed,
    }
    .ok_or_else(|| FlowError::Refused("no address for the manager: pass --manager-url".into()))?;
    let host = if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr
    };
    Ok(format!("http://{host}:{}", opts.manager_port))
}

pub(crate) fn describe_actions(j: &Journal, server: &Server, manager_answers: bool) -> Vec<String> {
    let mut a = Vec::new();
    a.push(match j.snapshot.mode {
        SnapshotMode::File => format!(
            "restore snapshot file {}",
            j.snapshot
                .path
                .as_deref()
                .unwrap_or(Path::new("?"))
                .display()
        ),
        SnapshotMode::None => "no snapshot: the volume alone carries the data".into(),
        _ if manager_answers => format!("take a snapshot through {}", j.manager.url),
        SnapshotMode::Required => "take a snapshot (the manager does not answer!)".into(),
        SnapshotMode::Auto => format!(
            "no snapshot: the manager at {} does not answer; the volume alone carries the data",
            j.manager.url
        ),
    });
    for f in &j.floating_ips {
        a.push(format!("disassociate floating IP {} ({})", f.address, f.id));
    }
    if can_detach(server) {
        a.push(format!(
            "detach {} volume(s) and {} port(s) from {} ({})",
            j.volumes.len(),
            j.ports.len(),
            server.id,
            server.status
        ));
    } else {
        a.push(format!(
            "skip detaching: server is {} on a host that is {}; the delete frees port and volumes",
            server.status,
            server.host_status.as_deref().unwrap_or("unknown")
        ));
    }
    a.push(format!("delete server {} and wait until it is gone, the port(s) unbound and the volume(s) available", server.id));
    for p in j.ports.iter().filter(|p| p.nova_created) {
        a.push(format!(
            "create a port on network {} to replace {}",
            p.network_id, p.id
        ));
    }
    a.push(format!(
        "boot `{}` (flavor {}, image {}, tag {}) on port(s) {}; wait ACTIVE",
        j.spec.name,
        j.spec.flavor_id,
        j.spec.image_id,
        j.new_server_tag,
        j.ports
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for v in &j.volumes {
        a.push(format!("attach volume {}; wait in-use", v.id));
    }
    for f in &j.floating_ips {
        a.push(format!("associate floating IP {}; wait ACTIVE", f.address));
    }
    a.push(format!(
        "wait for {}/readyz, restore, check ready",
        j.manager.url
    ));
    a
}
