//! The Helm chart (helm/cfy-manager) with the real `helm` and the Kubernetes schemas:
//! lint and render with the default values and with every option on, validate every manifest
//! (kubernetes-validate, strict, pinned version), and check what replaced the legacy ONAP
//! chart: no privilege, no cgroup hostPath, no lost+found init container, probes on cfy-init's
//! /healthz and /readyz, a grace period longer than cfy-init's shutdown deadline.

#[path = "common/helm.rs"]
mod helm;

use helm::*;
use serde_json::{json, Value};

fn default_docs() -> Vec<Value> {
    documents(&render(&[]))
}

fn all_options_docs() -> Vec<Value> {
    documents(&render(&["-f", all_options().to_str().unwrap()]))
}

fn the_statefulset(docs: &[Value]) -> &Value {
    let sets = of_kind(docs, "StatefulSet");
    assert_eq!(sets.len(), 1, "one StatefulSet");
    sets[0]
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    containers(pod)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The cfy-init config the chart's ConfigMap carries.
fn chart_config(docs: &[Value]) -> String {
    let maps = of_kind(docs, "ConfigMap");
    maps.iter()
        .find_map(|m| m["data"]["config.yaml"].as_str())
        .expect("a ConfigMap with config.yaml")
        .to_string()
}

fn seconds(humantime: &str) -> u64 {
    humantime::parse_duration(humantime)
        .unwrap_or_else(|e| panic!("{humantime}: {e}"))
        .as_secs()
}

#[test]
fn helm_lint_passes_with_default_and_all_options() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    for extra in [vec![], vec!["-f", all_options().to_str().unwrap()]] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend(extra);
        let (ok, out, err) = helm(&args);
        assert!(ok, "helm {}:\n{out}{err}", args.join(" "));
    }
}

#[test]
fn every_rendered_manifest_is_valid_for_the_pinned_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    for (name, rendered) in [
        ("default", render(&[])),
        (
            "all-options",
            render(&["-f", all_options().to_str().unwrap()]),
        ),
    ] {
        // One file per manifest as helm printed it (not re-serialized), so that a failure
        // names the resource.
        let manifests: Vec<&str> = rendered
            .split("\n---")
            .filter(|m| !documents(m).is_empty())
            .collect();
        assert!(
            manifests.len() >= 5,
            "{name}: only {} manifests",
            manifests.len()
        );
        for (i, manifest) in manifests.iter().enumerate() {
            let kind = documents(manifest)[0]["kind"].as_str().unwrap().to_string();
            let file = dir.path().join(format!("{name}-{i:02}-{kind}.yaml"));
            std::fs::write(&file, manifest).unwrap();
            let (ok, out) = kubernetes_validate(&file);
            assert!(
                ok,
                "{name}: {} is not valid for Kubernetes {KUBE_VERSION}:\n{out}",
                file.display()
            );
        }
    }
}

/// The validator really validates: a manifest with a misspelt field is rejected.
#[test]
fn kubernetes_validate_rejects_a_broken_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  prots:\n    - port: 80\n",
    )
    .unwrap();
    let (ok, out) = kubernetes_validate(&file);
    assert!(!ok, "a misspelt field passed validation: {out}");
}

#[test]
fn no_rendering_asks_for_privilege() {
    for (name, docs) in [
        ("default", default_docs()),
        ("all-options", all_options_docs()),
    ] {
        let bad = privilege_violations(&docs);
        assert!(bad.is_empty(), "{name}: {bad:?}");
        for pod in pod_specs(&docs) {
            assert!(
                pod.get("initContainers").is_none(),
                "{name}: init containers (the legacy lost+found clean-up is not needed): {}",
                pod["initContainers"]
            );
        }
    }
}

/// The privilege check finds what the legacy chart did (so the test above can fail).
#[test]
fn privilege_check_catches_the_legacy_pod() {
    let legacy = json!({
        "kind": "Deployment",
        "spec": {"template": {"spec": {
            "containers": [{"name": "cloudify-manager",
                            "securityContext": {"privileged": true,
                                                "capabilities": {"add": ["SYS_ADMIN"]}}}],
            "volumes": [{"name": "cgroup", "hostPath": {"path": "/sys/fs/cgroup"}}]
        }}}
    });
    let bad = privilege_violations(&[legacy]);
    assert_eq!(bad.len(), 4, "{bad:?}");
}

#[test]
fn values_schema_refuses_privilege_and_unknown_keys() {
    let chart = chart();
    for set in [
        "securityContext.privileged=true",
        "securityContext.capabilities.add[0]=SYS_ADMIN",
        "persistense.enabled=false",
        "hooks.port=0",
    ] {
        let (ok, _, err) = helm(&["template", "cfy", chart.to_str().unwrap(), "--set", set]);
        assert!(!ok, "--set {set} was accepted");
        assert!(
            err.contains("schema"),
            "--set {set}: not refused by values.schema.json: {err}"
        );
    }
}

#[test]
fn statefulset_of_one_with_store_secret_probes_and_grace_period() {
    let docs = default_docs();
    let sts = the_statefulset(&docs);
    assert_eq!(sts["spec"]["replicas"], 1);
    let claims = sts["spec"]["volumeClaimTemplates"].as_array().unwrap();
    assert!(claims.iter().any(|c| c["metadata"]["name"] == "store"));
    let pod = &sts["spec"]["template"]["spec"];
    let manager = container(pod, "manager");
    let mount = |path: &str| {
        manager["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(mount("/cfy-persist"), "store");

    // /secret: the service-account credentials, projected (token rotated by the kubelet).
    let secret_vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount("/secret"))
        .unwrap();
    let sources = secret_vol["projected"]["sources"].as_array().unwrap();
    assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(
        sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );

    // The admin password from the chart's Secret as CMPASS.
    let cmpass = manager["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "CMPASS")
        .expect("CMPASS env");
    let secret_name = cmpass["valueFrom"]["secretKeyRef"]["name"]
        .as_str()
        .unwrap();
    assert!(
        of_kind(&docs, "Secret")
            .iter()
            .any(|s| s["metadata"]["name"] == secret_name),
        "the admin Secret {secret_name} is not rendered"
    );

    // Probes on cfy-init's hooks port.
    let port = manager["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hooks")
        .expect("hooks port")["containerPort"]
        .as_u64()
        .unwrap();
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        assert_eq!(manager[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(manager[probe]["httpGet"]["port"], "hooks", "{probe}");
    }
    let config = chart_config(&docs);
    assert!(
        config.contains(&format!(":{port}")),
        "the hooks TCP listener is not on the probed port {port}:\n{config}"
    );

    // The kubelet waits longer than cfy-init's own shutdown deadline.
    let cfg: Value = serde_norway::from_str(&config).unwrap();
    let deadline = seconds(cfg["supervise"]["shutdown_deadline"].as_str().unwrap());
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > deadline,
        "grace period {grace}s not above the shutdown deadline {deadline}s"
    );
}

#[test]
fn all_options_use_the_existing_secret_and_add_the_recovery_sidecar() {
    let docs = all_options_docs();
    assert!(
        !of_kind(&docs, "Secret")
            .iter()
            .any(|s| s["metadata"]["name"] == "cfy-admin-password"),
        "an existing Secret must not be rendered"
    );
    let sts = the_statefulset(&docs);
    let pod = &sts["spec"]["template"]["spec"];
    let manager = container(pod, "manager");
    let cmpass = manager["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "CMPASS")
        .unwrap();
    assert_eq!(
        cmpass["valueFrom"]["secretKeyRef"],
        json!({"name": "cfy-admin-password", "key": "admin"})
    );
    assert_eq!(pod["terminationGracePeriodSeconds"], 75);

    // The sidecar shares the control socket's emptyDir and sees the snapshot volume.
    let sidecar = container(pod, "recovery");
    let mounts = |c: &Value| -> Vec<(String, String)> {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["mountPath"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let control = ("control".to_string(), "/run/cfy-init".to_string());
    assert!(mounts(manager).contains(&control));
    assert!(mounts(sidecar).contains(&control));
    let claims = sts["spec"]["volumeClaimTemplates"].as_array().unwrap();
    assert!(claims.iter().any(|c| c["metadata"]["name"] == "snapshots"));
    assert_eq!(
        sidecar["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );

    // User config is merged over the chart's.
    let cfg: Value = serde_norway::from_str(&chart_config(&docs)).unwrap();
    assert_eq!(cfg["log"]["level"], "debug");
    assert_eq!(cfg["supervise"]["shutdown_deadline"], "60s");
}

/// The config the chart hands to cfy-init is one cfy-init accepts.
#[test]
fn chart_config_passes_cfy_init_config_check() {
    let dir = tempfile::tempdir().unwrap();
    for (name, docs) in [
        ("default", default_docs()),
        ("all-options", all_options_docs()),
    ] {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, chart_config(&docs)).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cfy-init"))
            .args(["--root", dir.path().to_str().unwrap(), "config", "check"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: cfy-init config check of the chart's ConfigMap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn without_persistence_the_store_is_an_empty_dir_and_no_claim_is_made() {
    let docs = documents(&render(&["--set", "persistence.enabled=false"]));
    let sts = the_statefulset(&docs);
    assert!(
        sts["spec"].get("volumeClaimTemplates").is_none(),
        "a claim is rendered with persistence disabled"
    );
    let store = sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "store")
        .expect("a store volume");
    assert!(store.get("emptyDir").is_some(), "store volume: {store}");
}
