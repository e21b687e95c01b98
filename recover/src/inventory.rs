//! The manager's inventory: what rebuilding it needs when its server is already gone (the
//! server spec: flavor, image, key pair, security groups, metadata, user data, zone, tags;
//! each port with its network, fixed IPs, subnets and security groups; the volumes; the
//! floating IPs). Saved by `cfy-recover inventory save` and refreshed after every successful
//! recovery; written like the journal (temp file, fsync, rename, fsync of the directory), so
//! a crash leaves the old inventory or the new one, never half of one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::flow::{RUN_METADATA_KEY, RUN_TAG_PREFIX};
use crate::journal::*;

pub const INVENTORY_VERSION: u32 = 1;
pub const INVENTORY_FILE: &str = "inventory.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inventory {
    pub version: u32,
    /// Unix seconds.
    pub saved_at: u64,
    /// The server as it was when saved (its id is how a rebuild knows it is gone).
    pub server: OldServer,
    /// What a new server is booted with (without any recovery run's tag and metadata).
    pub spec: ServerSpec,
    /// The ports as they are now (`id` is the live port; `nova_created` as found).
    pub ports: Vec<PortRecord>,
    pub volumes: Vec<VolumeRecord>,
    pub floating_ips: Vec<FloatingIpRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{}: cannot write the inventory: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot read the inventory: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
}

/// The default inventory of a state directory.
pub fn default_path(state_dir: &Path) -> PathBuf {
    state_dir.join(INVENTORY_FILE)
}

fn clean_spec(spec: &ServerSpec) -> ServerSpec {
    let mut s = spec.clone();
    s.metadata.remove(RUN_METADATA_KEY);
    s.tags.retain(|t| !t.starts_with(RUN_TAG_PREFIX));
    s
}

impl Inventory {
    /// What a plan found (the server as it is now).
    pub fn from_found(j: &Journal, now: u64) -> Inventory {
        Inventory {
            version: INVENTORY_VERSION,
            saved_at: now,
            server: j.old_server.clone(),
            spec: clean_spec(&j.spec),
            ports: j.ports.clone(),
            volumes: j.volumes.clone(),
            floating_ips: j.floating_ips.clone(),
        }
    }

    /// The manager after a finished recovery: the new server, and the ports it got (a
    /// replacement port made by the recovery is a pre-created port from now on).
    pub fn after_recovery(j: &Journal, now: u64) -> Option<Inventory> {
        let new_id = j.new_server_id.clone()?;
        let target = |old: &str| -> String {
            j.ports
                .iter()
                .find(|p| p.id == old)
                .and_then(|p| p.target())
                .unwrap_or(old)
                .to_owned()
        };
        let ports = j
            .ports
            .iter()
            .map(|p| PortRecord {
                id: target(&p.id),
                nova_created: false,
                new_id: None,
                keep_ip: false,
                ..p.clone()
            })
            .collect();
        let floating_ips = j
            .floating_ips
            .iter()
            .map(|f| FloatingIpRecord {
                port_id: target(&f.port_id),
                ..f.clone()
            })
            .collect();
        Some(Inventory {
            version: INVENTORY_VERSION,
            saved_at: now,
            server: OldServer {
                id: new_id,
                name: j.spec.name.clone(),
                status: "ACTIVE".into(),
                host_status: None,
            },
            spec: clean_spec(&j.spec),
            ports,
            volumes: j.volumes.clone(),
            floating_ips,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), InventoryError> {
        let text = serde_json::to_vec_pretty(self).expect("inventory serializes");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| InventoryError::Write {
                path: path.into(),
                source,
            })?;
        }
        cfy_init::fsutil::write_atomic(path, &text, 0o600).map_err(|source| InventoryError::Write {
            path: path.into(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let err = |reason: String| InventoryError::Read {
            path: path.into(),
            reason,
        };
        let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let inv: Inventory = serde_json::from_slice(&text).map_err(|e| err(e.to_string()))?;
        if inv.version != INVENTORY_VERSION {
            return Err(err(format!(
                "version {} (this cfy-recover reads {INVENTORY_VERSION})",
                inv.version
            )));
        }
        Ok(inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::models::FixedIp;

    fn journal() -> Journal {
        let port = PortRecord {
            id: "p-old".into(),
            network_id: "n".into(),
            fixed_ips: vec![FixedIp {
                subnet_id: "s".into(),
                ip_address: "10.0.0.5".into(),
            }],
            security_groups: vec!["sg".into()],
            nova_created: true,
            new_id: Some("p-new".into()),
            keep_ip: false,
        };
        Journal {
            version: JOURNAL_VERSION,
            run_id: "r1".into(),
            started_at: 1,
            os_cloud: None,
            old_server: OldServer {
                id: "old".into(),
                name: "mgr".into(),
                status: "ERROR".into(),
                host_status: None,
            },
            spec: ServerSpec {
                name: "mgr".into(),
                flavor_id: "f".into(),
                image_id: "i".into(),
                key_name: None,
                security_groups: vec![],
                metadata: [(RUN_METADATA_KEY.to_string(), "r1".to_string())].into(),
                user_data: None,
                availability_zone: None,
                tags: vec!["manager".into(), format!("{RUN_TAG_PREFIX}r1")],
            },
            new_server_tag: format!("{RUN_TAG_PREFIX}r1"),
            new_server_id: Some("new".into()),
            ports: vec![port],
            volumes: vec![],
            floating_ips: vec![FloatingIpRecord {
                id: "f1".into(),
                address: "172.24.4.9".into(),
                port_id: "p-old".into(),
                fixed_ip: Some("10.0.0.5".into()),
            }],
            snapshot: SnapshotRecord {
                mode: SnapshotMode::None,
                path: None,
                sha256: None,
                remote: None,
            },
            manager: ManagerTarget {
                url: "http://10.0.0.5:8090".into(),
                token_file: None,
                ready_timeout_s: 1,
            },
            steps: Journal::fresh_steps(),
            finished: true,
            last_error: None,
            inventory_file: None,
            attempts: vec![],
        }
    }

    #[test]
    fn after_recovery_names_the_new_server_and_its_ports() {
        let inv = Inventory::after_recovery(&journal(), 9).unwrap();
        assert_eq!(inv.server.id, "new");
        assert_eq!(inv.ports[0].id, "p-new");
        assert!(
            !inv.ports[0].nova_created,
            "our replacement port survives a delete"
        );
        assert_eq!(inv.floating_ips[0].port_id, "p-new");
        assert_eq!(inv.spec.tags, vec!["manager".to_string()], "no run tag");
        assert!(!inv.spec.metadata.contains_key(RUN_METADATA_KEY));
    }

    #[test]
    fn saved_and_loaded_crash_safely() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/inventory.json");
        let inv = Inventory::after_recovery(&journal(), 9).unwrap();
        inv.save(&p).unwrap();
        let back = Inventory::load(&p).unwrap();
        assert_eq!(back.server.id, "new");
        std::fs::write(&p, b"{\"version\": 99}").unwrap();
        assert!(Inventory::load(&p).is_err());
    }
}
