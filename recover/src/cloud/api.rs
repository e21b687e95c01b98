//! The calls the recovery makes, one function each, typed.

use reqwest::Method;
use serde_json::{json, Value};

use super::models::*;
use super::{decode, Cloud, CloudError, Retry, Service};

/// `Ok(None)` for 404.
fn found<T>(r: Result<T, CloudError>) -> Result<Option<T>, CloudError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn q(s: &str) -> String {
    // Query values we send are ids, names and tags: escape the few reserved characters.
    s.replace('%', "%25")
        .replace('&', "%26")
        .replace('+', "%2B")
        .replace(' ', "%20")
        .replace('#', "%23")
        .replace('=', "%3D")
        .replace('?', "%3F")
}

impl Cloud {
    pub async fn server(&self, id: &str) -> Result<Option<Server>, CloudError> {
        found(
            self.get(Service::Compute, &format!("/servers/{id}"), "server")
                .await,
        )
    }

    /// Find a server by id, else by exact name (error when the name is ambiguous).
    pub async fn find_server(&self, name_or_id: &str) -> Result<Vec<Server>, CloudError> {
        if let Some(s) = self.server(name_or_id).await? {
            return Ok(vec![s]);
        }
        let regex = format!("^{}$", regex_escape(name_or_id));
        let list: Vec<Server> = self
            .get(
                Service::Compute,
                &format!("/servers/detail?name={}", q(&regex)),
                "servers",
            )
            .await?;
        Ok(list.into_iter().filter(|s| s.name == name_or_id).collect())
    }

    pub async fn servers_with_tag(&self, tag: &str) -> Result<Vec<Server>, CloudError> {
        self.get(
            Service::Compute,
            &format!("/servers/detail?tags={}", q(tag)),
            "servers",
        )
        .await
    }

    pub async fn flavors(&self) -> Result<Vec<Flavor>, CloudError> {
        self.get(
            Service::Compute,
            "/flavors/detail?is_public=None",
            "flavors",
        )
        .await
    }

    pub async fn keypair_exists(&self, name: &str) -> Result<bool, CloudError> {
        let r: Result<Value, _> = self
            .get(
                Service::Compute,
                &format!("/os-keypairs/{}", q(name)),
                "keypair",
            )
            .await;
        Ok(found(r)?.is_some())
    }

    pub async fn create_server(&self, body: &Value) -> Result<String, CloudError> {
        let v = self
            .call(
                Service::Compute,
                Method::POST,
                "/servers",
                Some(body),
                Retry::Once,
            )
            .await?;
        decode::<Value>(&v, "server", "create server").and_then(|s| {
            s["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| CloudError::Decode {
                    what: "create server".into(),
                    reason: "no server id in the answer".into(),
                })
        })
    }

    /// DELETE the server; 404 counts as done.
    pub async fn delete_server(&self, id: &str) -> Result<(), CloudError> {
        let r = self
            .call(
                Service::Compute,
                Method::DELETE,
                &format!("/servers/{id}"),
                None,
                Retry::Idempotent,
            )
            .await;
        found(r).map(|_| ())
    }

    pub async fn server_action(&self, id: &str, action: Value) -> Result<(), CloudError> {
        self.call(
            Service::Compute,
            Method::POST,
            &format!("/servers/{id}/action"),
            Some(&action),
            Retry::Idempotent,
        )
        .await
        .map(|_| ())
    }

    pub async fn detach_volume(&self, server: &str, volume: &str) -> Result<(), CloudError> {
        let r = self
            .call(
                Service::Compute,
                Method::DELETE,
                &format!("/servers/{server}/os-volume_attachments/{volume}"),
                None,
                Retry::Idempotent,
            )
            .await;
        found(r).map(|_| ())
    }

    pub async fn attach_volume(&self, server: &str, volume: &str) -> Result<(), CloudError> {
        let body = json!({ "volumeAttachment": { "volumeId": volume } });
        self.call(
            Service::Compute,
            Method::POST,
            &format!("/servers/{server}/os-volume_attachments"),
            Some(&body),
            Retry::Once,
        )
        .await
        .map(|_| ())
    }

    pub async fn detach_interface(&self, server: &str, port: &str) -> Result<(), CloudError> {
        let r = self
            .call(
                Service::Compute,
                Method::DELETE,
                &format!("/servers/{server}/os-interface/{port}"),
                None,
                Retry::Idempotent,
            )
            .await;
        found(r).map(|_| ())
    }

    /// Nova's view of the server's ports (`os-interface`).
    pub async fn interfaces(&self, server: &str) -> Result<Vec<InterfaceAttachment>, CloudError> {
        self.get(
            Service::Compute,
            &format!("/servers/{server}/os-interface"),
            "interfaceAttachments",
        )
        .await
    }

    pub async fn port(&self, id: &str) -> Result<Option<Port>, CloudError> {
        found(
            self.get(Service::Network, &format!("/ports/{id}"), "port")
                .await,
        )
    }

    pub async fn ports_of_device(&self, device_id: &str) -> Result<Vec<Port>, CloudError> {
        self.get(
            Service::Network,
            &format!("/ports?device_id={}", q(device_id)),
            "ports",
        )
        .await
    }

    pub async fn ports_named(&self, name: &str) -> Result<Vec<Port>, CloudError> {
        self.get(
            Service::Network,
            &format!("/ports?name={}", q(name)),
            "ports",
        )
        .await
    }

    /// Ports holding the fixed IP `ip` (on any subnet of the project's view).
    pub async fn ports_with_ip(&self, ip: &str) -> Result<Vec<Port>, CloudError> {
        self.get(
            Service::Network,
            &format!("/ports?fixed_ips={}", q(&format!("ip_address={ip}"))),
            "ports",
        )
        .await
    }

    pub async fn create_port(&self, body: &Value) -> Result<Port, CloudError> {
        let v = self
            .call(
                Service::Network,
                Method::POST,
                "/ports",
                Some(body),
                Retry::Once,
            )
            .await?;
        decode(&v, "port", "create port")
    }

    pub async fn floating_ip(&self, id: &str) -> Result<Option<FloatingIp>, CloudError> {
        found(
            self.get(
                Service::Network,
                &format!("/floatingips/{id}"),
                "floatingip",
            )
            .await,
        )
    }

    pub async fn floating_ips_of_port(&self, port: &str) -> Result<Vec<FloatingIp>, CloudError> {
        self.get(
            Service::Network,
            &format!("/floatingips?port_id={}", q(port)),
            "floatingips",
        )
        .await
    }

    pub async fn floating_ips_with_address(
        &self,
        address: &str,
    ) -> Result<Vec<FloatingIp>, CloudError> {
        self.get(
            Service::Network,
            &format!("/floatingips?floating_ip_address={}", q(address)),
            "floatingips",
        )
        .await
    }

    /// Bind the floating IP to `port` (with `fixed_ip`), or unbind it (`None`).
    pub async fn set_floating_ip_port(
        &self,
        id: &str,
        port: Option<&str>,
        fixed_ip: Option<&str>,
    ) -> Result<FloatingIp, CloudError> {
        let mut inner = json!({ "port_id": port });
        if let (Some(_), Some(ip)) = (port, fixed_ip) {
            inner["fixed_ip_address"] = json!(ip);
        }
        let v = self
            .call(
                Service::Network,
                Method::PUT,
                &format!("/floatingips/{id}"),
                Some(&json!({ "floatingip": inner })),
                Retry::Idempotent,
            )
            .await?;
        decode(&v, "floatingip", "update floating IP")
    }

    /// PUT the port's description (the watcher's lease). With `revision`, only if the port
    /// is still at it (Neutron's `If-Match: revision_number=N`): a port changed since it was
    /// read answers 412 ([`CloudError::is_precondition_failed`]) and is left as it is.
    pub async fn set_port_description(
        &self,
        id: &str,
        text: &str,
        revision: Option<u64>,
    ) -> Result<(), CloudError> {
        let if_match: Vec<_> = revision
            .map(|r| ("If-Match", format!("revision_number={r}")))
            .into_iter()
            .collect();
        self.call_with(
            Service::Network,
            Method::PUT,
            &format!("/ports/{id}"),
            Some(&json!({ "port": { "description": text } })),
            Retry::Idempotent,
            &if_match,
        )
        .await
        .map(|_| ())
    }

    pub async fn volume(&self, id: &str) -> Result<Option<Volume>, CloudError> {
        found(
            self.get(Service::Volume, &format!("/volumes/{id}"), "volume")
                .await,
        )
    }
}

/// Nova's `name` filter is a regular expression: match the name literally.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
