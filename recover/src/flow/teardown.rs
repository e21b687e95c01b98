//! The old server's teardown: its floating IPs disassociated, its volumes and surviving ports
//! detached (when its host can), the server deleted, and the wait until Nova and Cinder have
//! released what it held.

use std::time::Instant;

use serde_json::json;

use super::{can_detach, done, skipped, FlowError, Outcome, Runner};
use crate::cloud::models::Server;

impl Runner<'_> {
    pub(super) async fn disassociate(&mut self) -> Result<Outcome, FlowError> {
        if self.journal.floating_ips.is_empty() {
            return skipped("no floating IP");
        }
        let mut notes = Vec::new();
        for f in self.journal.floating_ips.clone() {
            let cur = self.cloud.floating_ip(&f.id).await?.ok_or_else(|| {
                FlowError::Unsafe(format!(
                    "floating IP {} ({}) no longer exists",
                    f.address, f.id
                ))
            })?;
            let ours = [Some(f.port_id.as_str()), self.port_target(&f.port_id)];
            match cur.port_id.as_deref() {
                None => notes.push(format!("{} already free", f.address)),
                Some(p) if ours.contains(&Some(p)) => {
                    self.cloud.set_floating_ip_port(&f.id, None, None).await?;
                    notes.push(format!("{} released", f.address));
                }
                Some(p) => {
                    return Err(FlowError::Unsafe(format!(
                    "floating IP {} is now bound to port {p}, not ours: someone else is using it",
                    f.address
                )))
                }
            }
        }
        done(notes.join("; "))
    }

    pub(super) fn port_target(&self, old_port: &str) -> Option<&str> {
        self.journal
            .ports
            .iter()
            .find(|p| p.id == old_port)
            .and_then(|p| p.target())
    }

    /// The old server when it is still there and able to detach.
    async fn detachable_old_server(&self) -> Result<Result<Server, String>, FlowError> {
        match self.cloud.server(&self.journal.old_server.id).await? {
            None => Ok(Err("old server already gone".into())),
            Some(s) if s.status == "DELETED" => Ok(Err("old server already gone".into())),
            Some(s) if !can_detach(&s) => Ok(Err(format!(
                "server is {} (host {}): Nova cannot detach; the delete frees the resources",
                s.status,
                s.host_status.as_deref().unwrap_or("unknown")
            ))),
            Some(s) => Ok(Ok(s)),
        }
    }

    pub(super) async fn detach_volumes(&mut self) -> Result<Outcome, FlowError> {
        if self.journal.volumes.is_empty() {
            return skipped("no volume");
        }
        let server = match self.detachable_old_server().await? {
            Err(why) => return skipped(why),
            Ok(s) => s,
        };
        let mut notes = Vec::new();
        for v in self.journal.volumes.clone() {
            let Some(vol) = self.cloud.volume(&v.id).await? else {
                return Err(FlowError::Unsafe(format!(
                    "volume {} no longer exists",
                    v.id
                )));
            };
            if !vol.attached_to().contains(&server.id.as_str()) {
                notes.push(format!("{} already detached", v.id));
                continue;
            }
            match self.cloud.detach_volume(&server.id, &v.id).await {
                Ok(()) => {}
                Err(e) if e.is_conflict() => {
                    notes.push(format!(
                        "{}: detach refused (409), the delete frees it",
                        v.id
                    ));
                    continue;
                }
                // A retried detach meets a volume already on its way: that is success.
                Err(e) => {
                    let now = self.cloud.volume(&v.id).await?;
                    let moving = now
                        .as_ref()
                        .map(|x| matches!(x.status.as_str(), "detaching" | "available"))
                        .unwrap_or(false);
                    if !moving {
                        return Err(e.into());
                    }
                }
            }
            let cloud = self.cloud;
            let id = v.id.clone();
            let waited = self
                .wait_for("volume detach", self.waits.detach_timeout, || async {
                    let vol = cloud.volume(&id).await?;
                    Ok(vol
                        .filter(|v| v.status == "available" && v.attachments.is_empty())
                        .map(|_| ()))
                })
                .await;
            notes.push(match waited {
                Ok(()) => format!("{} detached", v.id),
                Err(FlowError::Timeout { .. }) => {
                    format!("{}: detach did not finish, the delete frees it", v.id)
                }
                Err(e) => return Err(e),
            });
        }
        done(notes.join("; "))
    }

    pub(super) async fn detach_ports(&mut self) -> Result<Outcome, FlowError> {
        let server = match self.detachable_old_server().await? {
            Err(why) => return skipped(why),
            Ok(s) => s,
        };
        let mut notes = Vec::new();
        for p in self.journal.ports.clone() {
            if p.nova_created {
                notes.push(format!(
                    "{}: Nova's own port, left to die with the server",
                    p.id
                ));
                continue;
            }
            let Some(port) = self.cloud.port(&p.id).await? else {
                return Err(FlowError::Unsafe(format!(
                    "port {} no longer exists: the private IP is lost",
                    p.id
                )));
            };
            if port.device_id != server.id {
                notes.push(format!("{} already detached", p.id));
                continue;
            }
            match self.cloud.detach_interface(&server.id, &p.id).await {
                Ok(()) => {}
                Err(e) if e.is_conflict() => {
                    notes.push(format!(
                        "{}: detach refused (409), the delete unbinds it",
                        p.id
                    ));
                    continue;
                }
                Err(e) => {
                    let unbound = self.cloud.port(&p.id).await?.map(|x| x.is_unbound());
                    if unbound != Some(true) {
                        return Err(e.into());
                    }
                }
            }
            let cloud = self.cloud;
            let id = p.id.clone();
            let waited = self
                .wait_for("port detach", self.waits.detach_timeout, || async {
                    Ok(cloud
                        .port(&id)
                        .await?
                        .filter(|p| p.is_unbound())
                        .map(|_| ()))
                })
                .await;
            notes.push(match waited {
                Ok(()) => format!("{} detached", p.id),
                Err(FlowError::Timeout { .. }) => {
                    format!("{}: detach did not finish, the delete unbinds it", p.id)
                }
                Err(e) => return Err(e),
            });
        }
        done(notes.join("; "))
    }

    pub(super) async fn delete_server(&mut self) -> Result<Outcome, FlowError> {
        let id = self.journal.old_server.id.clone();
        let cloud = self.cloud;
        let mut deleted_by_us = false;
        let start = Instant::now();
        loop {
            let s = cloud.server(&id).await?;
            match s {
                None => break,
                Some(s) if s.status == "DELETED" => break,
                Some(s) if s.status == "SOFT_DELETED" => {
                    cloud
                        .server_action(&id, json!({ "forceDelete": null }))
                        .await?;
                    deleted_by_us = true;
                }
                Some(s) if s.task_state.as_deref() == Some("deleting") => {}
                Some(_) => match cloud.delete_server(&id).await {
                    Ok(()) => deleted_by_us = true,
                    Err(e) if e.is_conflict() => {
                        tracing::warn!(error = %e, "delete refused for now, retrying");
                    }
                    Err(e) => return Err(e.into()),
                },
            }
            if start.elapsed() > self.waits.timeout {
                return Err(FlowError::Timeout {
                    what: format!("server {id} to be deleted"),
                    waited: self.waits.timeout,
                });
            }
            tokio::time::sleep(self.waits.poll).await;
        }
        done(if deleted_by_us {
            format!("server {id} deleted")
        } else {
            format!("server {id} already gone")
        })
    }

    pub(super) async fn wait_released(&mut self) -> Result<Outcome, FlowError> {
        let cloud = self.cloud;
        for p in self.journal.ports.clone() {
            if p.nova_created {
                continue;
            }
            let id = p.id.clone();
            self.wait_for(&format!("port {id} to be unbound"), self.waits.timeout, || async {
                match cloud.port(&id).await? {
                    None => Err(FlowError::Unsafe(format!("port {id} was deleted with the server: the private IP is lost; re-run with a new plan and --accept-new-ip"))),
                    Some(p) if p.is_unbound() => Ok(Some(())),
                    Some(_) => Ok(None),
                }
            })
            .await?;
        }
        for v in self.journal.volumes.clone() {
            let id = v.id.clone();
            self.wait_for(&format!("volume {id} to be available"), self.waits.timeout, || async {
                match cloud.volume(&id).await? {
                    None => Err(FlowError::Unsafe(format!("volume {id} no longer exists"))),
                    Some(v) if v.status == "available" && v.attachments.is_empty() => Ok(Some(())),
                    Some(v) if v.status.starts_with("error") => Err(FlowError::Unsafe(format!(
                        "volume {id} is in status {}: fix it in Cinder (e.g. reset its state) and run resume",
                        v.status
                    ))),
                    Some(_) => Ok(None),
                }
            })
            .await?;
        }
        done(format!(
            "{} port(s) unbound, {} volume(s) available",
            self.journal
                .ports
                .iter()
                .filter(|p| !p.nova_created)
                .count(),
            self.journal.volumes.len()
        ))
    }
}
