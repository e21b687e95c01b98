//! Typed serde models of the parts of Nova, Neutron and Cinder responses the recovery reads.
//! Unknown fields are ignored (clouds add extensions); fields that depend on microversion or
//! policy are `Option`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub created: Option<String>,
    /// `{"id": ..}` before 2.47, the embedded flavor (`original_name`, ...) since.
    #[serde(default)]
    pub flavor: serde_json::Value,
    /// `{"id": ..}`, or `""` for a server booted from a volume.
    #[serde(default)]
    pub image: serde_json::Value,
    #[serde(default)]
    pub key_name: Option<String>,
    #[serde(default)]
    pub security_groups: Option<Vec<NamedRef>>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Base64; shown from 2.3 and, by default policy, to administrators only.
    #[serde(rename = "OS-EXT-SRV-ATTR:user_data", default)]
    pub user_data: Option<String>,
    #[serde(rename = "OS-EXT-AZ:availability_zone", default)]
    pub availability_zone: Option<String>,
    #[serde(rename = "OS-EXT-STS:task_state", default)]
    pub task_state: Option<String>,
    #[serde(rename = "OS-EXT-STS:vm_state", default)]
    pub vm_state: Option<String>,
    #[serde(rename = "os-extended-volumes:volumes_attached", default)]
    pub volumes_attached: Vec<VolumeRef>,
    /// `UP`, `DOWN`, `MAINTENANCE`, `UNKNOWN` or `""` (2.16+, policy-restricted).
    #[serde(default)]
    pub host_status: Option<String>,
    #[serde(default)]
    pub fault: Option<Fault>,
    /// Locked against changes (2.9+), and why (2.73+).
    #[serde(default)]
    pub locked: Option<bool>,
    #[serde(default)]
    pub locked_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct NamedRef {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct VolumeRef {
    pub id: String,
    #[serde(default)]
    pub delete_on_termination: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Fault {
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub message: Option<String>,
}

impl Server {
    pub fn image_id(&self) -> Option<String> {
        self.image
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }
    pub fn flavor_id(&self) -> Option<String> {
        self.flavor
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }
    pub fn flavor_name(&self) -> Option<String> {
        self.flavor
            .get("original_name")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Flavor {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Port {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub network_id: String,
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub device_owner: String,
    #[serde(default)]
    pub fixed_ips: Vec<FixedIp>,
    #[serde(default)]
    pub mac_address: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(rename = "binding:host_id", default)]
    pub host_id: Option<String>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Free text; the watcher keeps its lease here (see `watch`).
    #[serde(default)]
    pub description: Option<String>,
    /// Neutron's counter of changes to the port, for `If-Match` conditional updates.
    #[serde(default)]
    pub revision_number: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct FixedIp {
    pub subnet_id: String,
    pub ip_address: String,
}

impl Port {
    /// True when nothing (no server) holds the port.
    pub fn is_unbound(&self) -> bool {
        self.device_id.is_empty() && self.host_id.as_deref().unwrap_or("").is_empty()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FloatingIp {
    pub id: String,
    pub floating_ip_address: String,
    #[serde(default)]
    pub port_id: Option<String>,
    #[serde(default)]
    pub fixed_ip_address: Option<String>,
    #[serde(default)]
    pub status: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Volume {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub status: String,
    #[serde(default)]
    pub attachments: Vec<VolumeAttachment>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct VolumeAttachment {
    pub server_id: String,
    #[serde(default)]
    pub device: Option<String>,
}

impl Volume {
    pub fn attached_to(&self) -> Vec<&str> {
        self.attachments
            .iter()
            .map(|a| a.server_id.as_str())
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InterfaceAttachment {
    pub port_id: String,
    #[serde(default)]
    pub port_state: Option<String>,
}
