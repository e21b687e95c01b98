//! `plan` when the manager's server is already gone (deleted by hand, by a failed heal, by
//! the cloud): the journal is built from the manager's [`Inventory`] instead of the server.
//! Every surviving resource is checked as `plan` checks a live one; a port that was deleted
//! too is re-created on its subnet with the same fixed IP and security groups, so the agents
//! still find the manager, but only when that IP is free: when another port holds it the
//! plan stops, before any change, naming that port.

use std::path::PathBuf;

use serde_json::json;

use crate::cloud::models::Server;
use crate::cloud::Cloud;
use crate::flow::*;
use crate::inventory::{self, Inventory};
use crate::journal::*;
use crate::manager::Manager;
use crate::plan::{default_manager_url, describe_actions, manager_target, snapshot_record};

/// The inventory to rebuild `opts.server` from: `--inventory FILE`, else the state
/// directory's when it names this server.
pub fn inventory_for(opts: &Options) -> Result<Option<Inventory>, FlowError> {
    let (path, explicit): (PathBuf, bool) = match &opts.inventory {
        Some(p) => (p.clone(), true),
        None => (inventory::default_path(&opts.state_dir), false),
    };
    if !explicit && !path.exists() {
        return Ok(None);
    }
    let inv = Inventory::load(&path).map_err(|e| FlowError::Refused(e.to_string()))?;
    let ours = inv.server.name == opts.server || inv.server.id == opts.server;
    match (ours, explicit) {
        (true, _) => Ok(Some(inv)),
        (false, true) => Err(FlowError::Refused(format!(
            "{}: the inventory is of server `{}` ({}), not `{}`",
            path.display(),
            inv.server.name,
            inv.server.id,
            opts.server
        ))),
        (false, false) => Ok(None),
    }
}

pub async fn inspect_gone(
    cloud: &Cloud,
    opts: &Options,
    inv: Inventory,
) -> Result<Plan, FlowError> {
    let refused = FlowError::Refused;
    let mut warnings = vec![format!(
        "server `{}` ({}) is gone: rebuilding it from the inventory saved at {}",
        inv.server.name,
        inv.server.id,
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(inv.saved_at)
        )
    )];
    if !cloud
        .flavors()
        .await?
        .iter()
        .any(|f| f.id == inv.spec.flavor_id)
    {
        return Err(refused(format!(
            "flavor {} of the inventory no longer exists: the new server could not be booted",
            inv.spec.flavor_id
        )));
    }
    if let Some(k) = &inv.spec.key_name {
        if !cloud.keypair_exists(k).await? {
            return Err(refused(format!(
                "key pair `{k}` of the inventory no longer exists: re-create it first"
            )));
        }
    }
    let mut ports = Vec::new();
    for p in &inv.ports {
        let live = p.target().unwrap_or(&p.id).to_owned();
        match cloud.port(&live).await? {
            Some(port) => {
                if !port.device_id.is_empty() && port.device_id != inv.server.id {
                    return Err(refused(format!(
                        "port {} of the manager is attached to {} (`{}`): detach it there first",
                        port.id, port.device_id, port.device_owner
                    )));
                }
                ports.push(PortRecord {
                    id: port.id,
                    network_id: port.network_id,
                    fixed_ips: port.fixed_ips,
                    security_groups: port.security_groups,
                    nova_created: false,
                    new_id: None,
                    keep_ip: false,
                });
            }
            None => {
                for ip in &p.fixed_ips {
                    if let Some(holder) = cloud.ports_with_ip(&ip.ip_address).await?.first() {
                        return Err(refused(format!(
                            "port {} of the manager was deleted and its fixed IP {} is now held by port {} (`{}`, device {} `{}`): free that address, or recover with a new IP by hand",
                            p.id,
                            ip.ip_address,
                            holder.id,
                            holder.name,
                            if holder.device_id.is_empty() { "none" } else { &holder.device_id },
                            holder.device_owner
                        )));
                    }
                }
                let ips: Vec<&str> = p.fixed_ips.iter().map(|f| f.ip_address.as_str()).collect();
                warnings.push(format!(
                    "port {} was deleted too: a new port is created on network {} with the same fixed IP {} and security groups [{}]",
                    p.id,
                    p.network_id,
                    ips.join(", "),
                    p.security_groups.join(", ")
                ));
                ports.push(PortRecord {
                    id: p.id.clone(),
                    network_id: p.network_id.clone(),
                    fixed_ips: p.fixed_ips.clone(),
                    security_groups: p.security_groups.clone(),
                    nova_created: true,
                    new_id: None,
                    keep_ip: true,
                });
            }
        }
    }
    let mut volumes = Vec::new();
    for v in &inv.volumes {
        let vol = cloud.volume(&v.id).await?.ok_or_else(|| {
            refused(format!(
                "volume {} of the inventory no longer exists: the manager's data is gone",
                v.id
            ))
        })?;
        let elsewhere: Vec<&str> = vol
            .attached_to()
            .into_iter()
            .filter(|s| *s != inv.server.id)
            .collect();
        if !elsewhere.is_empty() {
            return Err(refused(format!(
                "volume {} is attached to {}: detach it there first",
                v.id,
                elsewhere.join(", ")
            )));
        }
        volumes.push(v.clone());
    }
    let mut floating_ips = Vec::new();
    for f in &inv.floating_ips {
        let cur = cloud.floating_ip(&f.id).await?.ok_or_else(|| {
            refused(format!(
                "floating IP {} ({}) of the inventory no longer exists",
                f.address, f.id
            ))
        })?;
        if let Some(p) = cur.port_id.as_deref() {
            if !ports.iter().any(|x| x.id == p) {
                return Err(refused(format!(
                    "floating IP {} is bound to port {p}, not the manager's: free it first",
                    f.address
                )));
            }
        }
        let port_id = inv
            .ports
            .iter()
            .find(|p| p.target().unwrap_or(&p.id) == f.port_id || p.id == f.port_id)
            .map(|p| p.id.clone())
            .unwrap_or_else(|| f.port_id.clone());
        floating_ips.push(FloatingIpRecord {
            port_id,
            ..f.clone()
        });
    }
    let run_id = new_run_id();
    let tag = format!("{RUN_TAG_PREFIX}{run_id}");
    let mut spec = inv.spec.clone();
    spec.metadata
        .insert(RUN_METADATA_KEY.into(), run_id.clone());
    spec.tags.push(tag.clone());
    if opts.user_data_file.is_some() {
        spec.user_data = Some(crate::plan::base64_file(
            opts.user_data_file.as_deref().expect("checked"),
        )?);
    }
    let mut journal = Journal {
        version: JOURNAL_VERSION,
        run_id,
        started_at: now_unix(),
        os_cloud: opts.os_cloud.clone(),
        old_server: OldServer {
            status: "DELETED".into(),
            host_status: None,
            ..inv.server.clone()
        },
        spec,
        new_server_tag: tag,
        new_server_id: None,
        ports,
        volumes,
        floating_ips,
        snapshot: snapshot_record(
            &opts.snapshot,
            opts.remote_snapshots.as_deref(),
            &opts.state_dir,
        )?,
        manager: manager_target(opts),
        steps: Journal::fresh_steps(),
        finished: false,
        last_error: None,
        inventory_file: opts.inventory.clone(),
        attempts: Vec::new(),
    };
    if journal.manager.url.is_empty() {
        journal.manager.url = default_manager_url(&journal, opts)?;
    }
    if journal.snapshot.mode == SnapshotMode::Required {
        return Err(refused(
            "--take-snapshot: the server is gone, nothing can take a snapshot; pass --snapshot FILE or recover with the volume alone".into(),
        ));
    }
    let gone: Server = serde_json::from_value(json!({
        "id": inv.server.id, "name": inv.server.name, "status": "DELETED",
    }))
    .expect("a minimal server");
    let manager_answers = Manager::new(&journal.manager.url, None)?.alive().await;
    warnings.extend(crate::checks::quota(cloud, None, false).await?);
    warnings.extend(crate::checks::reachability(&journal, manager_answers));
    let actions = describe_actions(&journal, &gone, manager_answers);
    Ok(Plan {
        journal,
        manager_answers,
        warnings,
        actions,
    })
}
