//! The replacement: ports replacing Nova-created ones (same fixed IP), the server created on
//! the surviving ports (found again by its run tag after a crash), its wait to ACTIVE, the
//! volumes attached and the floating IPs associated back.

use serde_json::{json, Value};

use super::{done, skipped, FlowError, Outcome, Runner, RUN_TAG_PREFIX};
use crate::cloud::models::{Port, Server};
use crate::journal::PortRecord;

impl Runner<'_> {
    fn replacement_port_name(&self, index: usize) -> String {
        format!(
            "{}-port{index}-{}{}",
            self.journal.spec.name, RUN_TAG_PREFIX, self.journal.run_id
        )
    }

    pub(super) async fn prepare_ports(&mut self) -> Result<Outcome, FlowError> {
        if !self.journal.ports.iter().any(|p| p.nova_created) {
            return skipped("every port survives: nothing to create");
        }
        let mut notes = Vec::new();
        for i in 0..self.journal.ports.len() {
            let p = self.journal.ports[i].clone();
            if !p.nova_created || p.new_id.is_some() {
                continue;
            }
            // The creation-time heuristic may call a pre-created port Nova's: if it
            // survived the delete unbound, it is simply reused.
            if let Some(port) = self.cloud.port(&p.id).await?.filter(|x| x.is_unbound()) {
                notes.push(format!("port {} survived the delete: reused", port.id));
                self.journal.ports[i].new_id = Some(port.id);
                self.save()?;
                continue;
            }
            let name = self.replacement_port_name(i);
            let port = self.create_port_once(&p, &name).await?;
            let ips: Vec<String> = port
                .fixed_ips
                .iter()
                .map(|f| f.ip_address.clone())
                .collect();
            notes.push(format!(
                "port {} ({}) replaces {}",
                port.id,
                ips.join(", "),
                p.id
            ));
            // A manager URL built from the old fixed IP follows the new one.
            if let (Some(old_ip), Some(new_ip)) = (p.fixed_ips.first(), ips.first()) {
                let from = format!("//{}:", old_ip.ip_address);
                let to = format!("//{new_ip}:");
                self.journal.manager.url = self.journal.manager.url.replace(&from, &to);
            }
            self.journal.ports[i].new_id = Some(port.id);
            self.save()?;
        }
        done(notes.join("; "))
    }

    /// Create port `name` unless it exists; ask for the old IP first, then any IP.
    async fn create_port_once(&self, old: &PortRecord, name: &str) -> Result<Port, FlowError> {
        let mut ask_same_ip = true;
        for attempt in 0..self.cloud.policy.attempts {
            if let Some(p) = self.cloud.ports_named(name).await?.into_iter().next() {
                return Ok(p);
            }
            let fixed_ips: Vec<Value> = old
                .fixed_ips
                .iter()
                .map(|f| {
                    if ask_same_ip {
                        json!({ "subnet_id": f.subnet_id, "ip_address": f.ip_address })
                    } else {
                        json!({ "subnet_id": f.subnet_id })
                    }
                })
                .collect();
            let body = json!({ "port": {
                "network_id": old.network_id, "name": name, "fixed_ips": fixed_ips,
                "security_groups": old.security_groups,
            }});
            match self.cloud.create_port(&body).await {
                Ok(p) => return Ok(p),
                Err(e) if (e.is_conflict() || e.status() == Some(400)) && old.keep_ip => {
                    let ips: Vec<&str> = old
                        .fixed_ips
                        .iter()
                        .map(|f| f.ip_address.as_str())
                        .collect();
                    let mut held = Vec::new();
                    for ip in &ips {
                        for p in self.cloud.ports_with_ip(ip).await? {
                            held.push(format!("{ip} by port {} (device {})", p.id, p.device_id));
                        }
                    }
                    return Err(FlowError::Unsafe(format!(
                        "the replacement of port {} must keep {} and Neutron refused it ({e}); held: {}",
                        old.id,
                        ips.join(", "),
                        if held.is_empty() { "none".into() } else { held.join("; ") }
                    )));
                }
                Err(e) if e.is_conflict() || e.status() == Some(400) => {
                    if !ask_same_ip {
                        return Err(e.into());
                    }
                    tracing::warn!(error = %e, "the old IP is not available, asking for any");
                    ask_same_ip = false;
                }
                Err(e) if e.is_transient() => {
                    tokio::time::sleep(self.cloud.policy.delay(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(FlowError::Unsafe(format!("could not create port {name}")))
    }

    fn create_body(&self) -> Result<Value, FlowError> {
        let s = &self.journal.spec;
        let networks: Vec<Value> = self
            .journal
            .ports
            .iter()
            .map(|p| {
                p.target()
                    .map(|id| json!({ "port": id }))
                    .ok_or_else(|| FlowError::Unsafe(format!("no port to replace {}", p.id)))
            })
            .collect::<Result<_, _>>()?;
        let mut server = json!({
            "name": s.name,
            "flavorRef": s.flavor_id,
            "imageRef": s.image_id,
            "metadata": s.metadata,
            "networks": networks,
            "tags": s.tags,
        });
        if !s.security_groups.is_empty() {
            server["security_groups"] = s
                .security_groups
                .iter()
                .map(|n| json!({ "name": n }))
                .collect();
        }
        if let Some(k) = &s.key_name {
            server["key_name"] = json!(k);
        }
        if let Some(u) = &s.user_data {
            server["user_data"] = json!(u);
        }
        if let Some(z) = &s.availability_zone {
            server["availability_zone"] = json!(z);
        }
        Ok(json!({ "server": server }))
    }

    /// The server carrying our tag, if one exists (at most one, or we stop).
    async fn find_ours(&self) -> Result<Option<Server>, FlowError> {
        let mut found = self
            .cloud
            .servers_with_tag(&self.journal.new_server_tag)
            .await?;
        found.retain(|s| s.status != "DELETED");
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => Err(FlowError::Unsafe(format!(
                "{n} servers carry tag {}: delete the extra ones, keep one, and run resume",
                self.journal.new_server_tag
            ))),
        }
    }

    pub(super) async fn create_server(&mut self) -> Result<Outcome, FlowError> {
        if let Some(id) = self.journal.new_server_id.clone() {
            if self.cloud.server(&id).await?.is_some() {
                return done(format!("server {id} already created"));
            }
            tracing::warn!(server = %id, "the recorded new server is gone; looking for our tag");
            self.journal.new_server_id = None;
            self.save()?;
        }
        let body = self.create_body()?;
        for attempt in 0..self.cloud.policy.attempts {
            if let Some(s) = self.find_ours().await? {
                self.journal.new_server_id = Some(s.id.clone());
                self.save()?;
                return done(format!("found server {} by tag", s.id));
            }
            match self.cloud.create_server(&body).await {
                Ok(id) => {
                    self.journal.new_server_id = Some(id.clone());
                    self.save()?;
                    return done(format!("server {id} created"));
                }
                // Maybe created, maybe not: look for the tag before trying again.
                Err(e) if e.is_transient() || e.is_conflict() => {
                    tracing::warn!(error = %e, "create uncertain, checking by tag");
                    tokio::time::sleep(self.cloud.policy.delay(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(s) = self.find_ours().await? {
            self.journal.new_server_id = Some(s.id.clone());
            self.save()?;
            return done(format!("found server {} by tag", s.id));
        }
        Err(FlowError::Unsafe(
            "Nova did not accept the new server after several tries".into(),
        ))
    }

    fn new_server_id(&self) -> Result<String, FlowError> {
        self.journal
            .new_server_id
            .clone()
            .ok_or_else(|| FlowError::Unsafe("no new server recorded".into()))
    }

    pub(super) async fn wait_active(&mut self) -> Result<Outcome, FlowError> {
        let mut id = self.new_server_id()?;
        if self.cloud.server(&id).await?.is_none() {
            // Deleted after it failed (the operator's fix): boot the replacement again.
            tracing::warn!(server = %id, "the new server is gone: creating it again");
            self.create_server().await?;
            id = self.new_server_id()?;
        }
        let cloud = self.cloud;
        self.wait_for(&format!("server {id} to become ACTIVE"), self.waits.timeout, || async {
            match cloud.server(&id).await? {
                None => Err(FlowError::Unsafe(format!("new server {id} disappeared; run resume to boot it again"))),
                Some(s) if s.status == "ACTIVE" => Ok(Some(())),
                Some(s) if s.status == "ERROR" => Err(FlowError::Unsafe(format!(
                    "new server {id} went to ERROR ({}); it was left in place for inspection: delete it and run resume to boot another",
                    s.fault.and_then(|f| f.message).unwrap_or_else(|| "no fault message".into())
                ))),
                Some(_) => Ok(None),
            }
        })
        .await?;
        done(format!("server {id} ACTIVE"))
    }

    pub(super) async fn attach_volumes(&mut self) -> Result<Outcome, FlowError> {
        if self.journal.volumes.is_empty() {
            return skipped("no volume");
        }
        let server = self.new_server_id()?;
        let cloud = self.cloud;
        let mut notes = Vec::new();
        for v in self.journal.volumes.clone() {
            let id = v.id.clone();
            let mut attempt = 0;
            loop {
                let vol = cloud
                    .volume(&id)
                    .await?
                    .ok_or_else(|| FlowError::Unsafe(format!("volume {id} no longer exists")))?;
                let holders = vol.attached_to();
                if holders.contains(&server.as_str()) {
                    break;
                }
                if let Some(other) = holders.first() {
                    return Err(FlowError::Unsafe(format!(
                        "volume {id} got attached to {other} meanwhile: detach it there and run resume"
                    )));
                }
                if vol.status == "available" {
                    match cloud.attach_volume(&server, &id).await {
                        Ok(()) => break,
                        Err(e) if e.is_transient() || e.is_conflict() => {
                            tracing::warn!(error = %e, "attach uncertain, checking the volume");
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                attempt += 1;
                if attempt >= cloud.policy.attempts * 4 {
                    return Err(FlowError::Unsafe(format!(
                        "volume {id} stays {} and cannot be attached",
                        vol.status
                    )));
                }
                tokio::time::sleep(self.waits.poll.max(cloud.policy.delay(attempt.min(3)))).await;
            }
            let sid = server.clone();
            self.wait_for(
                &format!("volume {id} to be in-use"),
                self.waits.timeout,
                || async {
                    Ok(cloud
                        .volume(&id)
                        .await?
                        .filter(|v| v.status == "in-use" && v.attached_to().contains(&sid.as_str()))
                        .map(|_| ()))
                },
            )
            .await?;
            notes.push(format!("{id} in-use"));
        }
        done(notes.join("; "))
    }

    pub(super) async fn associate(&mut self) -> Result<Outcome, FlowError> {
        if self.journal.floating_ips.is_empty() {
            return skipped("no floating IP");
        }
        let cloud = self.cloud;
        let mut notes = Vec::new();
        for f in self.journal.floating_ips.clone() {
            let old = self.journal.ports.iter().find(|p| p.id == f.port_id);
            let target = self
                .port_target(&f.port_id)
                .map(str::to_owned)
                .ok_or_else(|| {
                    FlowError::Unsafe(format!("no port for floating IP {}", f.address))
                })?;
            let fixed = old.filter(|p| !p.nova_created).and(f.fixed_ip.clone());
            let cur = cloud.floating_ip(&f.id).await?.ok_or_else(|| {
                FlowError::Unsafe(format!(
                    "floating IP {} ({}) no longer exists",
                    f.address, f.id
                ))
            })?;
            match cur.port_id.as_deref() {
                Some(p) if p == target => {}
                None => {
                    cloud
                        .set_floating_ip_port(&f.id, Some(&target), fixed.as_deref())
                        .await?;
                }
                Some(p) => {
                    return Err(FlowError::Unsafe(format!(
                        "floating IP {} got bound to port {p} meanwhile: free it and run resume",
                        f.address
                    )))
                }
            }
            let id = f.id.clone();
            // The data plane (status ACTIVE) is waited for only when the manager is reached
            // through this address; otherwise Neutron's binding is what the recovery needs
            // (a cloud without an L3 agent on the router never shows ACTIVE).
            let via_this = self
                .journal
                .manager
                .url
                .contains(&format!("//{}:", f.address));
            let want_active = via_this;
            let status = self
                .wait_for(
                    &format!(
                        "floating IP {} to be {}",
                        f.address,
                        if want_active {
                            "ACTIVE"
                        } else {
                            "bound to the port"
                        }
                    ),
                    self.waits.timeout,
                    || async {
                        Ok(cloud.floating_ip(&id).await?.and_then(|f| {
                            let bound = f.port_id.as_deref() == Some(target.as_str());
                            (bound && (!want_active || f.status == "ACTIVE")).then_some(f.status)
                        }))
                    },
                )
                .await?;
            notes.push(format!("{} → port {target} ({status})", f.address));
        }
        done(notes.join("; "))
    }
}
