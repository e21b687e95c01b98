//! Neutron: ports (with the watcher's lease in `description`) and floating IPs.

use super::*;

pub(super) async fn list_ports(State(sh): S, Query(q): Q) -> Response {
    let st = sh.state.lock().unwrap();
    let list: Vec<Value> = st
        .ports
        .values()
        .filter(|p| {
            query_matches(&q, "device_id", Some(&p.device_id))
                && query_matches(&q, "name", Some(&p.name))
                && query_matches(&q, "network_id", Some(&p.network_id))
        })
        .map(|p| st.render_port(p))
        .collect();
    Json(json!({ "ports": list })).into_response()
}

pub(super) async fn show_port(State(sh): S, Path(id): Path<String>) -> Response {
    let st = sh.state.lock().unwrap();
    match st.ports.get(&id) {
        Some(p) => Json(json!({ "port": st.render_port(p) })).into_response(),
        None => neutron_err(
            StatusCode::NOT_FOUND,
            "PortNotFound",
            format!("Port {id} could not be found."),
        ),
    }
}

/// PUT a port: only `description` is updated (the watcher's lease); the rest is ignored.
/// As in Neutron, `If-Match: revision_number=N` makes the update conditional (412 when
/// the port has moved on), and one update bumps the revision twice: the answer shows N+1,
/// the next read N+2 (measured on Zed's ML2: the update and its follow-up commit).
pub(super) async fn update_port(
    State(sh): S,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = sh.state.lock().unwrap();
    let Some(p) = st.ports.get_mut(&id) else {
        return neutron_err(
            StatusCode::NOT_FOUND,
            "PortNotFound",
            format!("Port {id} could not be found."),
        );
    };
    if let Some(wanted) = if_match_revision(&headers) {
        if wanted != p.revision {
            return neutron_err(
                StatusCode::PRECONDITION_FAILED,
                "RevisionNumberConstraintFailed",
                format!(
                    "Constrained to {wanted}, but current revision is {}",
                    p.revision
                ),
            );
        }
    }
    if let Some(d) = body["port"]["description"].as_str() {
        p.description = d.to_owned();
    }
    p.revision += 1;
    let answered = p.clone();
    p.revision += 1;
    Json(json!({ "port": st.render_port(&answered) })).into_response()
}

/// The revision an `If-Match: revision_number=N` header asks for, if any.
fn if_match_revision(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get("if-match")?.to_str().ok()?;
    value
        .split(',')
        .find_map(|v| v.trim().strip_prefix("revision_number=")?.parse().ok())
}

pub(super) async fn create_port(State(sh): S, Json(body): Json<Value>) -> Response {
    let b = &body["port"];
    let mut st = sh.state.lock().unwrap();
    let wanted = b["fixed_ips"][0]["ip_address"].as_str().map(str::to_owned);
    let ip = match wanted {
        Some(ip) => {
            if st.ports.values().any(|p| p.ip == ip) {
                return neutron_err(
                    StatusCode::CONFLICT,
                    "IpAddressAlreadyAllocated",
                    format!("IP address {ip} already allocated in subnet {SUBNET_ID}"),
                );
            }
            ip
        }
        None => sh.alloc_ip(&mut st),
    };
    let id = st.id("port");
    let port = SPort {
        id: id.clone(),
        name: b["name"].as_str().unwrap_or("").to_owned(),
        network_id: b["network_id"].as_str().unwrap_or(NETWORK_ID).to_owned(),
        subnet_id: SUBNET_ID.into(),
        ip,
        mac: "fa:16:3e:00:02:02".into(),
        device_id: String::new(),
        device_owner: String::new(),
        host_id: String::new(),
        status: "DOWN".into(),
        created_at: now_rfc3339(),
        nova_created: false,
        security_groups: b["security_groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        description: String::new(),
        revision: 1,
    };
    let v = st.render_port(&port);
    st.ports.insert(id, port);
    (StatusCode::CREATED, Json(json!({ "port": v }))).into_response()
}

pub(super) async fn list_fips(State(sh): S, Query(q): Q) -> Response {
    let st = sh.state.lock().unwrap();
    let list: Vec<Value> = st
        .fips
        .values()
        .filter(|f| {
            query_matches(&q, "port_id", f.port_id.as_deref())
                && query_matches(&q, "floating_ip_address", Some(&f.address))
        })
        .map(|f| st.render_fip(f))
        .collect();
    Json(json!({ "floatingips": list })).into_response()
}

pub(super) async fn show_fip(State(sh): S, Path(id): Path<String>) -> Response {
    let st = sh.state.lock().unwrap();
    match st.fips.get(&id) {
        Some(f) => Json(json!({ "floatingip": st.render_fip(f) })).into_response(),
        None => neutron_err(
            StatusCode::NOT_FOUND,
            "FloatingIPNotFound",
            format!("Floating IP {id} could not be found"),
        ),
    }
}

pub(super) async fn update_fip(
    State(sh): S,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let b = &body["floatingip"];
    let port = b["port_id"].as_str().map(str::to_owned);
    let v = {
        let mut st = sh.state.lock().unwrap();
        if !st.fips.contains_key(&id) {
            return neutron_err(
                StatusCode::NOT_FOUND,
                "FloatingIPNotFound",
                format!("Floating IP {id} could not be found"),
            );
        }
        let mut fixed = None;
        if let Some(p) = &port {
            let Some(port) = st.ports.get(p) else {
                return neutron_err(
                    StatusCode::NOT_FOUND,
                    "PortNotFound",
                    format!("Port {p} could not be found."),
                );
            };
            fixed = Some(
                b["fixed_ip_address"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or(port.ip.clone()),
            );
            if st
                .fips
                .values()
                .any(|f| f.id != id && f.port_id.as_deref() == Some(p))
            {
                return neutron_err(
                    StatusCode::CONFLICT,
                    "FloatingIPPortAlreadyAssociated",
                    format!("Port {p} already has a floating IP"),
                );
            }
        }
        let f = st.fips.get_mut(&id).expect("checked");
        f.port_id = port.clone();
        f.fixed_ip = fixed;
        f.status = "DOWN".into();
        let f = f.clone();
        st.render_fip(&f)
    };
    if port.is_some() {
        let delay = sh.config.lock().unwrap().fip;
        let sh2 = sh.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(f) = sh2.state.lock().unwrap().fips.get_mut(&id) {
                if f.port_id.is_some() {
                    f.status = "ACTIVE".into();
                }
            }
        });
    }
    Json(json!({ "floatingip": v })).into_response()
}
