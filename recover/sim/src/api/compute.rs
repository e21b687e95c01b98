//! Nova: servers, their actions, volume attachments, interfaces, flavors and key pairs.

use super::*;

fn compute_base(sh: &Shared) -> String {
    format!("{}/compute/v2.1", sh.base_url)
}

/// Nova's `name` filter is a regular expression; we support `^literal$` and substrings.
fn name_matches(filter: &str, name: &str) -> bool {
    let anchored = filter.starts_with('^') && filter.ends_with('$');
    let lit: String = {
        let inner = filter.trim_start_matches('^').trim_end_matches('$');
        let mut out = String::new();
        let mut esc = false;
        for c in inner.chars() {
            if c == '\\' && !esc {
                esc = true;
                continue;
            }
            esc = false;
            out.push(c);
        }
        out
    };
    if anchored {
        name == lit
    } else {
        name.contains(&lit)
    }
}

/// What a non-admin does not see of a server.
fn policy_filter(sh: &Shared, mut v: Value) -> Value {
    if !sh.config.lock().unwrap().admin_view {
        if let Some(o) = v.as_object_mut() {
            o.retain(|k, _| !k.starts_with("OS-EXT-SRV-ATTR:") && k != "host_status");
        }
    }
    v
}

pub(super) async fn list_servers(
    State(sh): S,
    Extension(mv): Extension<Mv>,
    Query(q): Q,
) -> Response {
    let st = sh.state.lock().unwrap();
    let base = compute_base(&sh);
    let servers: Vec<Value> = st
        .servers
        .values()
        .filter(|s| {
            q.get("name")
                .map(|f| name_matches(f, &s.name))
                .unwrap_or(true)
        })
        .filter(|s| {
            q.get("tags")
                .map(|t| t.split(',').all(|t| s.tags.iter().any(|x| x == t)))
                .unwrap_or(true)
        })
        .map(|s| policy_filter(&sh, st.render_server(s, mv, &base)))
        .collect();
    Json(json!({ "servers": servers })).into_response()
}

pub(super) async fn show_server(
    State(sh): S,
    Extension(mv): Extension<Mv>,
    Path(id): Path<String>,
) -> Response {
    let st = sh.state.lock().unwrap();
    match st.servers.get(&id) {
        Some(s) => {
            let v = policy_filter(&sh, st.render_server(s, mv, &compute_base(&sh)));
            Json(json!({ "server": v })).into_response()
        }
        None => not_found(&format!("Instance {id}")),
    }
}

pub(super) async fn create_server(
    State(sh): S,
    Extension(mv): Extension<Mv>,
    Json(body): Json<Value>,
) -> Response {
    let b = &body["server"];
    let name = b["name"].as_str().unwrap_or("").to_owned();
    if name.is_empty() {
        return err(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "Invalid input for field/attribute name.",
        );
    }
    if b.get("tags").is_some() && !mv.at_least(52) {
        return err(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "Additional properties are not allowed ('tags' was unexpected)",
        );
    }
    let mut st = sh.state.lock().unwrap();
    let flavor = b["flavorRef"].as_str().unwrap_or("").to_owned();
    if !st.flavors.iter().any(|f| f.id == flavor) {
        return err(
            StatusCode::BAD_REQUEST,
            "badRequest",
            format!("Flavor {flavor} could not be found."),
        );
    }
    let image = b["imageRef"].as_str().unwrap_or("").to_owned();
    if !st.images.contains(&image) {
        return err(
            StatusCode::BAD_REQUEST,
            "badRequest",
            format!("Can not find requested image {image}"),
        );
    }
    let key_name = b["key_name"].as_str().map(str::to_owned);
    if let Some(k) = &key_name {
        if !st.keypairs.contains(k) {
            return err(
                StatusCode::BAD_REQUEST,
                "badRequest",
                format!("Invalid key_name provided: {k}"),
            );
        }
    }
    let id = st.id("srv");
    let host = if st.host_up("compute-1") {
        "compute-1"
    } else {
        "compute-2"
    }
    .to_string();
    let mut ports = Vec::new();
    for n in b["networks"].as_array().cloned().unwrap_or_default() {
        if let Some(pid) = n["port"].as_str() {
            let Some(p) = st.ports.get(pid) else {
                return err(
                    StatusCode::BAD_REQUEST,
                    "badRequest",
                    format!("Port {pid} could not be found."),
                );
            };
            if !p.device_id.is_empty() {
                return conflict(format!("Port {pid} is still in use."));
            }
            ports.push(pid.to_owned());
        } else if n["uuid"].is_string() {
            let pid = st.id("port");
            let ip = sh.alloc_ip(&mut st);
            st.ports.insert(
                pid.clone(),
                SPort {
                    id: pid.clone(),
                    name: String::new(),
                    network_id: NETWORK_ID.into(),
                    subnet_id: SUBNET_ID.into(),
                    ip,
                    mac: "fa:16:3e:00:01:01".into(),
                    device_id: String::new(),
                    device_owner: String::new(),
                    host_id: String::new(),
                    status: "DOWN".into(),
                    created_at: now_rfc3339(),
                    nova_created: true,
                    security_groups: vec!["default".into()],
                    description: String::new(),
                    revision: 1,
                },
            );
            ports.push(pid);
        }
    }
    for pid in &ports {
        let p = st.ports.get_mut(pid).expect("checked");
        p.device_id = id.clone();
        p.device_owner = "compute:nova".into();
        p.revision += 1;
    }
    let metadata = b["metadata"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let tags = b["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let root = sh.vm_root(&st);
    let _ = std::fs::create_dir_all(&root);
    st.servers.insert(
        id.clone(),
        SServer {
            id: id.clone(),
            name,
            status: "BUILD".into(),
            task_state: Some("spawning".into()),
            created: now_rfc3339(),
            flavor_id: flavor,
            image_id: image,
            key_name,
            // Security groups apply to ports Nova creates; a given port keeps its own.
            security_groups: b["security_groups"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|g| g["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_else(|| vec!["default".into()]),
            metadata,
            user_data: b["user_data"].as_str().map(str::to_owned),
            az: b["availability_zone"].as_str().unwrap_or("nova").to_owned(),
            tags,
            host: host.clone(),
            ports,
            volumes: vec![],
            fault: None,
            root,
        },
    );
    drop(st);
    let delay = sh.config.lock().unwrap().build;
    let sh2 = sh.clone();
    let id2 = id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        {
            let mut st = sh2.state.lock().unwrap();
            let Some(s) = st.servers.get_mut(&id2) else {
                return;
            };
            if s.status != "BUILD" {
                return;
            }
            s.status = "ACTIVE".into();
            s.task_state = None;
            let ports = s.ports.clone();
            for p in ports {
                if let Some(p) = st.ports.get_mut(&p) {
                    p.status = "ACTIVE".into();
                    p.host_id = host.clone();
                    p.revision += 1;
                }
            }
        }
        sh2.maybe_start_guest(&id2);
    });
    let resp = json!({ "server": {
        "id": id, "links": [{ "rel": "self", "href": format!("{}/servers/{id}", compute_base(&sh)) }],
        "OS-DCF:diskConfig": "MANUAL", "security_groups": [{ "name": "default" }], "adminPass": "sim-admin-pass",
    }});
    (StatusCode::ACCEPTED, Json(resp)).into_response()
}

/// Remove a server for good: what Nova does at the end of a delete, also when the compute
/// host is down (a "local delete"): pre-created ports unbound, its own ports deleted,
/// volumes detached.
fn finish_delete(sh: &Shared, id: &str) {
    sh.stop_guest(id);
    let mut st = sh.state.lock().unwrap();
    let Some(s) = st.servers.remove(id) else {
        return;
    };
    for pid in &s.ports {
        let nova = st.ports.get(pid).map(|p| p.nova_created).unwrap_or(false);
        if nova {
            st.ports.remove(pid);
            for f in st.fips.values_mut() {
                if f.port_id.as_deref() == Some(pid) {
                    f.port_id = None;
                    f.fixed_ip = None;
                    f.status = "DOWN".into();
                }
            }
        } else if let Some(p) = st.ports.get_mut(pid) {
            unbind(p);
        }
    }
    for vid in &s.volumes {
        if let Some(v) = st.volumes.get_mut(vid) {
            let _ = std::fs::rename(s.root.join("cfy-persist"), &v.home);
            v.status = "available".into();
            v.server = None;
            v.device = None;
        }
    }
}

fn unbind(p: &mut SPort) {
    p.device_id.clear();
    p.device_owner.clear();
    p.host_id.clear();
    p.status = "DOWN".into();
    p.revision += 1;
}

pub(super) async fn delete_server(State(sh): S, Path(id): Path<String>) -> Response {
    {
        let mut st = sh.state.lock().unwrap();
        let Some(s) = st.servers.get_mut(&id) else {
            return not_found(&format!("Instance {id}"));
        };
        if s.task_state.as_deref() == Some("deleting") || s.status == "SOFT_DELETED" {
            return StatusCode::NO_CONTENT.into_response();
        }
        if sh.config.lock().unwrap().soft_delete {
            // reclaim_instance_interval > 0: the server is only marked; its VM stops but
            // port and volumes stay bound until forceDelete (or the reclaim period).
            s.status = "SOFT_DELETED".into();
            drop(st);
            sh.stop_guest(&id);
            return StatusCode::NO_CONTENT.into_response();
        }
        s.task_state = Some("deleting".into());
    }
    let delay = sh.config.lock().unwrap().delete;
    let sh2 = sh.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        finish_delete(&sh2, &id);
    });
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn server_action(
    State(sh): S,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if !sh.state.lock().unwrap().servers.contains_key(&id) {
        return not_found(&format!("Instance {id}"));
    }
    if body.get("forceDelete").is_some() {
        finish_delete(&sh, &id);
        return StatusCode::ACCEPTED.into_response();
    }
    err(
        StatusCode::BAD_REQUEST,
        "badRequest",
        "unsupported action in the simulator",
    )
}

/// Why a server cannot take an attach/detach now (Nova's 409), if it cannot.
fn busy(s: &SServer, what: &str) -> Option<Response> {
    if s.status == "ERROR" || s.status == "BUILD" || s.task_state.is_some() {
        let state = if s.status == "ERROR" {
            "error"
        } else {
            "building"
        };
        return Some(conflict(format!(
            "Cannot '{what}' instance {} while it is in vm_state {state}",
            s.id
        )));
    }
    None
}

pub(super) async fn list_volume_attachments(State(sh): S, Path(id): Path<String>) -> Response {
    let st = sh.state.lock().unwrap();
    let Some(s) = st.servers.get(&id) else {
        return not_found(&format!("Instance {id}"));
    };
    let list: Vec<Value> = s
        .volumes
        .iter()
        .filter_map(|v| st.volumes.get(v))
        .map(|v| json!({ "id": v.id, "volumeId": v.id, "serverId": id, "device": v.device }))
        .collect();
    Json(json!({ "volumeAttachments": list })).into_response()
}

pub(super) async fn attach_volume(
    State(sh): S,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let vol = body["volumeAttachment"]["volumeId"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    {
        let mut st = sh.state.lock().unwrap();
        let Some(s) = st.servers.get(&id) else {
            return not_found(&format!("Instance {id}"));
        };
        if let Some(r) = busy(s, "attach_volume") {
            return r;
        }
        let Some(v) = st.volumes.get_mut(&vol) else {
            return not_found(&format!("Volume {vol}"));
        };
        if v.status != "available" {
            return err(StatusCode::BAD_REQUEST, "badRequest",
                format!("Invalid volume: volume {vol} status must be available, but current status is: {}", v.status));
        }
        v.status = "attaching".into();
        v.server = Some(id.clone());
        v.device = Some("/dev/vdb".into());
        st.servers
            .get_mut(&id)
            .expect("checked")
            .volumes
            .push(vol.clone());
    }
    let delay = sh.config.lock().unwrap().attach;
    let sh2 = sh.clone();
    let (id2, vol2) = (id.clone(), vol.clone());
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        {
            let mut st = sh2.state.lock().unwrap();
            let root = match st.servers.get(&id2) {
                Some(s) => s.root.clone(),
                None => return,
            };
            let Some(v) = st.volumes.get_mut(&vol2) else {
                return;
            };
            if v.status != "attaching" {
                return;
            }
            let _ = std::fs::create_dir_all(&root);
            if let Err(e) = std::fs::rename(&v.home, root.join("cfy-persist")) {
                tracing::error!(error = %e, "cannot move the volume directory into the server");
            }
            v.status = "in-use".into();
        }
        sh2.maybe_start_guest(&id2);
    });
    Json(json!({ "volumeAttachment": { "id": vol, "volumeId": vol, "serverId": id, "device": "/dev/vdb" } }))
        .into_response()
}

pub(super) async fn detach_volume(
    State(sh): S,
    Path((id, vol)): Path<(String, String)>,
) -> Response {
    let host_up;
    {
        let mut st = sh.state.lock().unwrap();
        let Some(s) = st.servers.get(&id) else {
            return not_found(&format!("Instance {id}"));
        };
        if let Some(r) = busy(s, "detach_volume") {
            return r;
        }
        host_up = st.host_up(&s.host);
        let Some(v) = st
            .volumes
            .get_mut(&vol)
            .filter(|v| v.server.as_deref() == Some(id.as_str()))
        else {
            return not_found(&format!("volume_id {vol} attached to {id}"));
        };
        if v.status != "in-use" {
            return err(
                StatusCode::BAD_REQUEST,
                "badRequest",
                format!("Invalid volume: volume {vol} is {}", v.status),
            );
        }
        v.status = "detaching".into();
    }
    if !host_up {
        // The RPC cast to the dead compute host is lost: the volume stays `detaching`.
        return StatusCode::ACCEPTED.into_response();
    }
    let delay = sh.config.lock().unwrap().detach;
    let sh2 = sh.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut st = sh2.state.lock().unwrap();
        let root = match st.servers.get_mut(&id) {
            Some(s) => {
                s.volumes.retain(|v| v != &vol);
                s.root.clone()
            }
            None => return,
        };
        if let Some(v) = st.volumes.get_mut(&vol) {
            let _ = std::fs::rename(root.join("cfy-persist"), &v.home);
            v.status = "available".into();
            v.server = None;
            v.device = None;
        }
    });
    StatusCode::ACCEPTED.into_response()
}

pub(super) async fn list_interfaces(State(sh): S, Path(id): Path<String>) -> Response {
    let st = sh.state.lock().unwrap();
    let Some(s) = st.servers.get(&id) else {
        return not_found(&format!("Instance {id}"));
    };
    let list: Vec<Value> = s
        .ports
        .iter()
        .filter_map(|p| st.ports.get(p))
        .map(|p| json!({ "port_id": p.id, "net_id": p.network_id, "mac_addr": p.mac, "port_state": p.status,
            "fixed_ips": [{ "subnet_id": p.subnet_id, "ip_address": p.ip }] }))
        .collect();
    Json(json!({ "interfaceAttachments": list })).into_response()
}

pub(super) async fn detach_interface(
    State(sh): S,
    Path((id, port)): Path<(String, String)>,
) -> Response {
    let host_up;
    {
        let st = sh.state.lock().unwrap();
        let Some(s) = st.servers.get(&id) else {
            return not_found(&format!("Instance {id}"));
        };
        if let Some(r) = busy(s, "detach_interface") {
            return r;
        }
        if !s.ports.contains(&port) {
            return not_found(&format!("Port {port} attached to {id}"));
        }
        host_up = st.host_up(&s.host);
    }
    if !host_up {
        return StatusCode::ACCEPTED.into_response();
    }
    let delay = sh.config.lock().unwrap().detach;
    let sh2 = sh.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut st = sh2.state.lock().unwrap();
        if let Some(s) = st.servers.get_mut(&id) {
            s.ports.retain(|p| p != &port);
        }
        let nova = st.ports.get(&port).map(|p| p.nova_created).unwrap_or(false);
        if nova {
            st.ports.remove(&port);
        } else if let Some(p) = st.ports.get_mut(&port) {
            unbind(p);
        }
    });
    StatusCode::ACCEPTED.into_response()
}

pub(super) async fn list_flavors(State(sh): S) -> Response {
    let st = sh.state.lock().unwrap();
    let list: Vec<Value> = st
        .flavors
        .iter()
        .map(|f| {
            json!({ "id": f.id, "name": f.name, "vcpus": 4, "ram": 8192, "disk": 40,
            "OS-FLV-EXT-DATA:ephemeral": 0, "swap": "", "rxtx_factor": 1.0,
            "os-flavor-access:is_public": true,
            "description": null, "extra_specs": {}, "links": [] })
        })
        .collect();
    Json(json!({ "flavors": list })).into_response()
}

pub(super) async fn show_keypair(State(sh): S, Path(name): Path<String>) -> Response {
    let st = sh.state.lock().unwrap();
    if !st.keypairs.contains(&name) {
        return not_found(&format!("Keypair {name} not found for user"));
    }
    Json(
        json!({ "keypair": { "name": name, "public_key": "ssh-ed25519 AAAAC3Nz sim",
        "fingerprint": "1e:2c:9b:56:79:4b:45:77:f9:ca:7a:98:2c:b0:d5:3c", "user_id": "u",
        "deleted": false, "created_at": "2024-01-01T00:00:00.000000", "id": 1,
        "type": "ssh", "updated_at": null, "deleted_at": null } }),
    )
    .into_response()
}
