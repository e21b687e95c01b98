//! The simulated cloud's state and its JSON renderings, shaped like the API reference
//! (microversion-dependent fields included or left out as Nova does).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

/// A microversion `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mv(pub u32, pub u32);

impl Mv {
    pub fn parse(s: &str) -> Option<Mv> {
        let (a, b) = s.trim().split_once('.')?;
        Some(Mv(a.parse().ok()?, b.parse().ok()?))
    }
    pub fn at_least(self, minor: u32) -> bool {
        self.1 >= minor
    }
}

impl std::fmt::Display for Mv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

#[derive(Debug, Clone)]
pub struct SServer {
    pub id: String,
    pub name: String,
    pub status: String,
    pub task_state: Option<String>,
    pub created: String,
    pub flavor_id: String,
    pub image_id: String,
    pub key_name: Option<String>,
    pub security_groups: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub user_data: Option<String>,
    pub az: String,
    pub tags: Vec<String>,
    pub host: String,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub fault: Option<String>,
    /// The simulated VM's file system.
    pub root: PathBuf,
}

#[derive(Debug, Clone)]
pub struct SPort {
    pub id: String,
    pub name: String,
    pub network_id: String,
    pub subnet_id: String,
    pub ip: String,
    pub mac: String,
    pub device_id: String,
    pub device_owner: String,
    pub host_id: String,
    pub status: String,
    pub created_at: String,
    /// Created by Nova for a server (deleted with it). Not visible in the API, as in Neutron.
    pub nova_created: bool,
    pub security_groups: Vec<String>,
    /// Free text (cfy-recover's watcher keeps its lease here).
    pub description: String,
    /// Neutron's `revision_number`: bumped on every change, checked by `If-Match`.
    pub revision: u64,
}

#[derive(Debug, Clone)]
pub struct SFip {
    pub id: String,
    pub address: String,
    pub port_id: Option<String>,
    pub fixed_ip: Option<String>,
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct SVolume {
    pub id: String,
    pub name: String,
    pub status: String,
    pub server: Option<String>,
    pub device: Option<String>,
    pub created_at: String,
    /// Where the volume's directory lives while detached.
    pub home: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Flavor {
    pub id: String,
    pub name: String,
}

/// One API request as the simulator saw it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl Seen {
    /// A request that could change something (token requests do not count).
    pub fn is_mutating(&self) -> bool {
        self.method != "GET" && !self.path.contains("/auth/tokens")
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub servers: BTreeMap<String, SServer>,
    pub ports: BTreeMap<String, SPort>,
    pub fips: BTreeMap<String, SFip>,
    pub volumes: BTreeMap<String, SVolume>,
    pub flavors: Vec<Flavor>,
    pub images: Vec<String>,
    pub keypairs: Vec<String>,
    /// Compute hosts and whether they are up.
    pub hosts: BTreeMap<String, bool>,
    pub tokens: Vec<String>,
    pub seen: Vec<Seen>,
    pub seq: u64,
    pub next_ip: u32,
}

pub const PROJECT_ID: &str = "0c4e939acacf4376bdcd1129f1a054ad";
pub const NETWORK_ID: &str = "net-mgmt";
pub const SUBNET_ID: &str = "subnet-mgmt";

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub fn rfc3339_ago(secs: u64) -> String {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

impl State {
    /// A fresh id with a readable prefix (unique within the simulator).
    pub fn id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!(
            "{prefix}-{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            rand::random::<u32>(),
            self.seq & 0xffff,
            rand::random::<u16>() & 0xfff,
            rand::random::<u16>() & 0xfff,
            self.seq
        )
    }

    pub fn host_up(&self, host: &str) -> bool {
        self.hosts.get(host).copied().unwrap_or(false)
    }

    pub fn render_server(&self, s: &SServer, mv: Mv, base: &str) -> Value {
        let mut addresses = serde_json::Map::new();
        if s.status != "BUILD" {
            let list: Vec<Value> = s
                .ports
                .iter()
                .filter_map(|p| self.ports.get(p))
                .map(|p| {
                    json!({ "addr": p.ip, "version": 4, "OS-EXT-IPS:type": "fixed",
                        "OS-EXT-IPS-MAC:mac_addr": p.mac })
                })
                .collect();
            addresses.insert("mgmt".into(), Value::Array(list));
        }
        let flavor = if mv.at_least(47) {
            let name = self
                .flavors
                .iter()
                .find(|f| f.id == s.flavor_id)
                .map(|f| f.name.clone())
                .unwrap_or_default();
            json!({ "original_name": name, "vcpus": 4, "ram": 8192, "disk": 40,
                "ephemeral": 0, "swap": 0, "extra_specs": {} })
        } else {
            json!({ "id": s.flavor_id, "links": [] })
        };
        let vm_state = match s.status.as_str() {
            "ACTIVE" => "active",
            "BUILD" => "building",
            "ERROR" => "error",
            "SHUTOFF" => "stopped",
            "SOFT_DELETED" => "soft-delete",
            _ => "active",
        };
        let mut v = json!({
            "id": s.id,
            "name": s.name,
            "status": s.status,
            "tenant_id": PROJECT_ID,
            "user_id": "9349aff8be7545ac9d2f1d00999a23cd",
            "created": s.created,
            "updated": now_rfc3339(),
            "hostId": "c0fe1ab6f0b2c0bb4a5c3e3e1e7c9b0a34dd5b0d0b6c9f5a1e3c1b7d",
            "addresses": addresses,
            "links": [{ "rel": "self", "href": format!("{base}/servers/{}", s.id) }],
            "metadata": s.metadata,
            "flavor": flavor,
            "image": { "id": s.image_id, "links": [] },
            "key_name": s.key_name,
            "security_groups": s.security_groups.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>(),
            "accessIPv4": "",
            "accessIPv6": "",
            "progress": 0,
            "config_drive": "",
            "OS-DCF:diskConfig": "MANUAL",
            "OS-EXT-AZ:availability_zone": s.az,
            "OS-EXT-SRV-ATTR:host": s.host,
            "OS-EXT-SRV-ATTR:hypervisor_hostname": s.host,
            "OS-EXT-SRV-ATTR:instance_name": format!("instance-{:08x}", s.id.len()),
            "OS-EXT-STS:task_state": s.task_state,
            "OS-EXT-STS:vm_state": vm_state,
            "OS-EXT-STS:power_state": if s.status == "ACTIVE" { 1 } else { 0 },
            "OS-SRV-USG:launched_at": if s.status == "BUILD" { Value::Null } else { json!(s.created.trim_end_matches('Z')) },
            "OS-SRV-USG:terminated_at": null,
            "os-extended-volumes:volumes_attached": s.volumes.iter()
                .map(|id| json!({ "id": id, "delete_on_termination": false })).collect::<Vec<_>>(),
        });
        if mv.at_least(3) {
            v["OS-EXT-SRV-ATTR:user_data"] = json!(s.user_data);
            v["OS-EXT-SRV-ATTR:reservation_id"] = json!("r-3fhpjulh");
            v["OS-EXT-SRV-ATTR:launch_index"] = json!(0);
            v["OS-EXT-SRV-ATTR:hostname"] = json!(s.name);
            v["OS-EXT-SRV-ATTR:kernel_id"] = json!("");
            v["OS-EXT-SRV-ATTR:ramdisk_id"] = json!("");
            v["OS-EXT-SRV-ATTR:root_device_name"] = json!("/dev/vda");
        }
        if mv.at_least(9) {
            v["locked"] = json!(false);
        }
        if mv.at_least(16) {
            v["host_status"] = json!(if self.host_up(&s.host) { "UP" } else { "DOWN" });
        }
        if mv.at_least(19) {
            v["description"] = Value::Null;
        }
        if mv.at_least(26) {
            v["tags"] = json!(s.tags);
        }
        if mv.at_least(63) {
            v["trusted_image_certificates"] = Value::Null;
        }
        if mv.at_least(73) {
            v["locked_reason"] = Value::Null;
        }
        if s.status == "ERROR" {
            v["fault"] = json!({ "code": 500, "created": s.created,
                "message": s.fault.clone().unwrap_or_else(|| "simulated failure".into()) });
        }
        v
    }

    pub fn render_port(&self, p: &SPort) -> Value {
        json!({
            "id": p.id,
            "name": p.name,
            "network_id": p.network_id,
            "tenant_id": PROJECT_ID,
            "project_id": PROJECT_ID,
            "mac_address": p.mac,
            "admin_state_up": true,
            "status": p.status,
            "device_id": p.device_id,
            "device_owner": p.device_owner,
            "fixed_ips": [{ "subnet_id": p.subnet_id, "ip_address": p.ip }],
            "allowed_address_pairs": [],
            "extra_dhcp_opts": [],
            "security_groups": p.security_groups,
            "description": p.description,
            "binding:host_id": p.host_id,
            "binding:vif_type": if p.host_id.is_empty() { "unbound" } else { "ovs" },
            "binding:vnic_type": "normal",
            "binding:profile": {},
            "binding:vif_details": {},
            "port_security_enabled": true,
            "dns_name": "",
            "created_at": p.created_at,
            "updated_at": now_rfc3339(),
            "revision_number": p.revision,
            "tags": [],
        })
    }

    pub fn render_fip(&self, f: &SFip) -> Value {
        json!({
            "id": f.id,
            "floating_ip_address": f.address,
            "floating_network_id": "net-public",
            "router_id": if f.port_id.is_some() { json!("router-1") } else { Value::Null },
            "port_id": f.port_id,
            "fixed_ip_address": f.fixed_ip,
            "status": f.status,
            "tenant_id": PROJECT_ID,
            "project_id": PROJECT_ID,
            "description": "",
            "dns_domain": "",
            "dns_name": "",
            "port_details": Value::Null,
            "created_at": rfc3339_ago(3600),
            "updated_at": now_rfc3339(),
            "revision_number": 1,
            "tags": [],
        })
    }

    pub fn render_volume(&self, v: &SVolume) -> Value {
        let attachments: Vec<Value> = match (&v.server, v.status.as_str()) {
            (Some(s), "in-use" | "detaching") => {
                let host = self
                    .servers
                    .get(s)
                    .map(|s| s.host.clone())
                    .unwrap_or_default();
                vec![json!({
                    "server_id": s, "attachment_id": format!("att-{}", v.id), "id": v.id,
                    "volume_id": v.id, "device": v.device, "host_name": host,
                    "attached_at": v.created_at.trim_end_matches('Z'),
                })]
            }
            _ => vec![],
        };
        json!({
            "id": v.id,
            "name": v.name,
            "status": v.status,
            "size": 40,
            "availability_zone": "nova",
            "attachments": attachments,
            "bootable": "false",
            "encrypted": false,
            "multiattach": false,
            "metadata": {},
            "description": null,
            "volume_type": "__DEFAULT__",
            "snapshot_id": null,
            "source_volid": null,
            "user_id": "9349aff8be7545ac9d2f1d00999a23cd",
            "os-vol-tenant-attr:tenant_id": PROJECT_ID,
            "replication_status": null,
            "consistencygroup_id": null,
            "created_at": v.created_at.trim_end_matches('Z'),
            "updated_at": now_rfc3339().trim_end_matches('Z'),
            "links": [],
        })
    }
}
