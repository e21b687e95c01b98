//! The simulator against the OpenStack API reference: its responses validate against the
//! OpenAPI response schemas; microversions are honoured (fields appear from their version)
//! and echoed; unsupported ones are refused with 406.

#[path = "common/openapi.rs"]
mod openapi;

use openapi::Spec;
use openstack_sim::{Sim, SimConfig};
use serde_json::{json, Value};

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn new(sim: &Sim) -> (Client, Value) {
        let http = reqwest::Client::new();
        let body = json!({ "auth": { "identity": { "methods": ["password"], "password": { "user": {
            "name": openstack_sim::USERNAME, "domain": { "id": "default" },
            "password": openstack_sim::PASSWORD } } },
            "scope": { "project": { "name": "demo", "domain": { "id": "default" } } } } });
        let r = http
            .post(format!("{}/auth/tokens", sim.auth_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let token = r.headers()["X-Subject-Token"].to_str().unwrap().to_owned();
        let doc: Value = r.json().await.unwrap();
        (
            Client {
                http,
                base: sim.url.clone(),
                token,
            },
            doc,
        )
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        mv: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .header("X-Auth-Token", &self.token);
        if let Some(v) = mv {
            r = r.header("OpenStack-API-Version", v);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, headers, v)
    }
}

fn assert_valid(spec: &Spec, path: &str, method: &str, status: u16, v: &Value) {
    let errors = spec.check(path, method, status, v);
    assert!(
        errors.is_empty(),
        "{method} {path} ({status}) does not match the API reference:\n{}\n{v:#}",
        errors.join("\n")
    );
}

#[test]
fn simulator_responses_match_the_api_reference() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), SimConfig::default()).unwrap();
    let seeded = sim.seed_manager("cfy-manager", false);
    let compute = Spec::load("compute-v2.96.yaml");
    let network = Spec::load("network-v2.yaml");
    let volume = Spec::load("block-storage-v3.70.yaml");
    let identity = Spec::load("identity-v3.14.yaml");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (c, token_doc) = Client::new(&sim).await;
        // Keystone answers 201 (as its API reference says); the generated description lists
        // the body under 200.
        assert_valid(&identity, "/v3/auth/tokens", "post", 200, &token_doc);
        let mv = Some("compute 2.79");
        let sid = &seeded.server_id;
        let (s, _, v) = c
            .call("GET", &format!("/compute/v2.1/servers/{sid}"), mv, None)
            .await;
        assert_valid(&compute, "/v2.1/servers/{id}", "get", s, &v);
        let (s, _, v) = c
            .call("GET", "/compute/v2.1/servers/detail?tags=manager", mv, None)
            .await;
        assert_valid(&compute, "/v2.1/servers/detail", "get", s, &v);
        assert_eq!(v["servers"].as_array().unwrap().len(), 1);
        let (s, _, v) = c
            .call("GET", "/compute/v2.1/flavors/detail", mv, None)
            .await;
        assert_valid(&compute, "/v2.1/flavors/detail", "get", s, &v);
        let (s, _, v) = c
            .call("GET", "/compute/v2.1/os-keypairs/ops", mv, None)
            .await;
        assert_valid(&compute, "/v2.1/os-keypairs/{id}", "get", s, &v);
        let (s, _, v) = c
            .call(
                "GET",
                &format!("/compute/v2.1/servers/{sid}/os-interface"),
                mv,
                None,
            )
            .await;
        assert_valid(
            &compute,
            "/v2.1/servers/{server_id}/os-interface",
            "get",
            s,
            &v,
        );
        let (s, _, v) = c
            .call(
                "GET",
                &format!("/compute/v2.1/servers/{sid}/os-volume_attachments"),
                mv,
                None,
            )
            .await;
        assert_valid(
            &compute,
            "/v2.1/servers/{server_id}/os-volume_attachments",
            "get",
            s,
            &v,
        );
        let (s, _, v) = c
            .call(
                "GET",
                &format!("/network/v2.0/ports?device_id={sid}"),
                None,
                None,
            )
            .await;
        assert_valid(&network, "/v2.0/ports", "get", s, &v);
        let (s, _, v) = c
            .call(
                "GET",
                &format!("/network/v2.0/ports/{}", seeded.port_id),
                None,
                None,
            )
            .await;
        assert_valid(&network, "/v2.0/ports/{port_id}", "get", s, &v);
        let (s, _, v) = c
            .call(
                "GET",
                &format!("/network/v2.0/floatingips?port_id={}", seeded.port_id),
                None,
                None,
            )
            .await;
        assert_valid(&network, "/v2.0/floatingips", "get", s, &v);
        let (s, _, v) = c
            .call(
                "GET",
                &format!("/network/v2.0/floatingips/{}", seeded.fip_id),
                None,
                None,
            )
            .await;
        assert_valid(&network, "/v2.0/floatingips/{id}", "get", s, &v);
        let (s, _, v) = c
            .call(
                "PUT",
                &format!("/network/v2.0/floatingips/{}", seeded.fip_id),
                None,
                Some(json!({ "floatingip": { "port_id": null } })),
            )
            .await;
        assert_valid(&network, "/v2.0/floatingips/{id}", "put", s, &v);
        let vpath = format!(
            "/volume/v3/{}/volumes/{}",
            openstack_sim::state::PROJECT_ID,
            seeded.volume_id
        );
        let (s, _, v) = c.call("GET", &vpath, Some("volume 3.50"), None).await;
        assert_valid(&volume, "/v3/{project_id}/volumes/{id}", "get", s, &v);
        let (s, _, v) = c
            .call(
                "POST",
                "/network/v2.0/ports",
                None,
                Some(json!({ "port": { "network_id": "net-mgmt", "name": "spare" } })),
            )
            .await;
        assert_valid(&network, "/v2.0/ports", "post", s, &v);
        let spare = v["port"]["id"].as_str().unwrap().to_owned();
        let (s, _, v) = c
            .call(
                "POST",
                "/compute/v2.1/servers",
                mv,
                Some(json!({ "server": {
            "name": "x", "flavorRef": "f-large", "imageRef": "img-cfy-5.1.2",
            "networks": [{ "port": spare }], "tags": ["t"] } })),
            )
            .await;
        assert_eq!(s, 202);
        assert_valid(&compute, "/v2.1/servers", "post", s, &v);
    });
}

#[test]
fn microversions_are_honoured_and_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), SimConfig::default()).unwrap();
    let seeded = sim.seed_manager("m", false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (c, _) = Client::new(&sim).await;
        let path = format!("/compute/v2.1/servers/{}", seeded.server_id);
        let (s, h, v) = c.call("GET", &path, None, None).await;
        assert_eq!(s, 200);
        assert_eq!(
            h["OpenStack-API-Version"], "compute 2.1",
            "default is the minimum"
        );
        assert_eq!(h["X-OpenStack-Nova-API-Version"], "2.1");
        assert!(
            v["server"].get("host_status").is_none(),
            "host_status is 2.16+"
        );
        assert!(
            v["server"]["flavor"]["id"].is_string(),
            "flavor id before 2.47"
        );
        let (_, h, v) = c.call("GET", &path, Some("compute 2.79"), None).await;
        assert_eq!(h["OpenStack-API-Version"], "compute 2.79");
        assert_eq!(v["server"]["host_status"], "UP");
        assert_eq!(
            v["server"]["flavor"]["original_name"], "m1.large",
            "embedded flavor from 2.47"
        );
        assert_eq!(v["server"]["tags"], json!(["manager"]));
        let (s, _, _) = c.call("GET", &path, Some("compute 2.200"), None).await;
        assert_eq!(s, 406, "unsupported microversion refused");
        // Tags in create need 2.52.
        let (s, _, _) = c
            .call(
                "POST",
                "/compute/v2.1/servers",
                Some("compute 2.30"),
                Some(json!({ "server": {
            "name": "x", "flavorRef": "f-large", "imageRef": "img-cfy-5.1.2", "tags": ["a"] } })),
            )
            .await;
        assert_eq!(s, 400);
        let vpath = format!(
            "/volume/v3/{}/volumes/{}",
            openstack_sim::state::PROJECT_ID,
            seeded.volume_id
        );
        let (_, h, _) = c.call("GET", &vpath, Some("volume 3.50"), None).await;
        assert_eq!(h["OpenStack-API-Version"], "volume 3.50");
        // Without a token: 401.
        let r = reqwest::get(format!("{}{path}", sim.url)).await.unwrap();
        assert_eq!(r.status(), 401);
    });
}

#[test]
fn client_refuses_a_cloud_that_ignores_the_microversion() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        dir.path(),
        SimConfig {
            max_compute: openstack_sim::state::Mv(2, 60),
            ..Default::default()
        },
    )
    .unwrap();
    sim.seed_manager("m", false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env = sim.os_env();
        let get = |k: &str| env.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        let creds = cfy_recover::creds::load(None, None, &get).unwrap();
        let cloud = cfy_recover::cloud::Cloud::new(creds, Default::default()).unwrap();
        let err = cloud.find_server("m").await.unwrap_err().to_string();
        assert!(err.contains("406") || err.contains("microversion"), "{err}");
    });
}
