//! The Helm chart (helm/cfy-manager) with the real `helm` and the Kubernetes schemas:
//! lint and render with the default values, with every option on and with the ONAP preset,
//! validate every manifest (kubernetes-validate, strict, pinned version), and check what
//! replaced the legacy ONAP chart: no privilege, no cgroup hostPath, no lost+found init
//! container, probes on cfy-init's /healthz and /readyz, a grace period derived from
//! cfy-init's shutdown deadline, `config:` validated by cfy-init's own schema, and the ONAP
//! preset's drop-in for OOM's dcae-cloudify-manager (names, ports, host name, mounts).

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

fn onap_docs() -> Vec<Value> {
    documents(&render(&["-f", onap_preset().to_str().unwrap()]))
}

/// The three renderings every check runs on.
fn renderings() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("default", vec![]),
        (
            "all-options",
            vec!["-f", all_options().to_str().unwrap().to_string().leak()],
        ),
        (
            "onap",
            vec!["-f", onap_preset().to_str().unwrap().to_string().leak()],
        ),
    ]
}

fn the_statefulset(docs: &[Value]) -> &Value {
    let sets = of_kind(docs, "StatefulSet");
    assert_eq!(sets.len(), 1, "one StatefulSet");
    sets[0]
}

/// `helm template` with extra arguments: (success, stderr).
fn try_render(extra: &[&str]) -> (bool, String) {
    let chart = chart();
    let mut args = vec!["template", "cfy", chart.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (ok, _, err) = helm(&args);
    (ok, err)
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
    for (_, extra) in renderings() {
        let mut args = vec!["lint", "--strict", chart];
        args.extend(extra);
        let (ok, out, err) = helm(&args);
        assert!(ok, "helm {}:\n{out}{err}", args.join(" "));
    }
}

#[test]
fn every_rendered_manifest_is_valid_for_the_pinned_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in renderings() {
        let rendered = render(&extra);
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
            let doc = &documents(manifest)[0];
            let kind = doc["kind"].as_str().unwrap().to_string();
            if doc["apiVersion"] == "monitoring.coreos.com/v1" {
                // The Prometheus Operator's CRD is not part of Kubernetes' schemas; its
                // fields are checked in metrics_options_render_annotations_and_a_service_monitor.
                continue;
            }
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
        ("onap", onap_docs()),
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

    // The sidecar shares the control socket's emptyDir and sees the snapshot volume; it runs
    // cfy-recover (its image's entry point) with the configured arguments.
    let sidecar = container(pod, "recovery");
    // The args are the real CLI's (`cfy-recover watch --inventory FILE ...`).
    assert_eq!(
        sidecar["args"],
        json!([
            "watch",
            "--inventory",
            "/var/lib/cfy-recover/inventory.json",
            "--failures",
            "3",
            "--cooldown",
            "1h"
        ])
    );
    assert!(
        sidecar.get("command").is_none(),
        "no shell loop: {}",
        sidecar["command"]
    );
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
        ("onap", onap_docs()),
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
    let claims: Vec<&Value> = sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    assert!(
        !claims.iter().any(|c| c["metadata"]["name"] == "store"),
        "a store claim is rendered with persistence disabled"
    );
    let store = sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "store")
        .expect("a store volume");
    assert!(store.get("emptyDir").is_some(), "store volume: {store}");
    // Neither volume: no claim at all.
    let docs = documents(&render(&[
        "--set",
        "persistence.enabled=false",
        "--set",
        "snapshots.enabled=false",
    ]));
    assert!(the_statefulset(&docs)["spec"]
        .get("volumeClaimTemplates")
        .is_none());
}

/// The committed values.schema.json is what scripts/gen-values-schema.sh makes from this
/// binary's `cfy-init config schema` (run the script after changing the config or the base).
#[test]
fn values_schema_is_generated_from_the_config_schema() {
    let out = std::process::Command::new("bash")
        .arg(chart().join("../../scripts/gen-values-schema.sh"))
        .arg("--stdout")
        .env("CFY_INIT_BIN", env!("CARGO_BIN_EXE_cfy-init"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen-values-schema.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated: Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap())
            .unwrap();
    assert!(
        generated == committed,
        "helm/cfy-manager/values.schema.json is stale: run scripts/gen-values-schema.sh"
    );
    // cfy-init's sections are all there, each closed to unknown keys.
    let config = &committed["properties"]["config"];
    assert_eq!(config["additionalProperties"], false);
    for section in [
        "log",
        "persist",
        "secret",
        "patch",
        "supervise",
        "hooks",
        "snapshot",
    ] {
        assert!(
            config["properties"].get(section).is_some(),
            "config.{section} missing from the values schema"
        );
    }
}

/// `config:` is validated by cfy-init's schema, and the grace period cannot be made shorter
/// than cfy-init's shutdown deadline plus a margin.
#[test]
fn values_schema_refuses_unknown_config_keys_and_a_short_grace_period() {
    for set in [
        "config.bogus=1",
        "config.supervise.shutdown_dedline=30s",
        "config.log.format=xml",
        "config.hooks.socket_mode=1",
        "terminationGraceMarginSeconds=2",
        "terminationGraceMarginSeconds=0",
    ] {
        let (ok, err) = try_render(&["--set", set]);
        assert!(!ok, "--set {set} was accepted");
        assert!(
            err.contains("schema"),
            "--set {set}: not refused by values.schema.json: {err}"
        );
    }
    // A deadline the chart cannot turn into seconds is refused too (not a 0 s grace period).
    let (ok, err) = try_render(&["--set", "config.supervise.shutdown_deadline=soon"]);
    assert!(!ok, "an unreadable deadline was accepted");
    assert!(err.contains("shutdown_deadline"), "{err}");
    // Valid config renders.
    let (ok, err) = try_render(&["--set", "config.log.level=debug"]);
    assert!(ok, "{err}");
}

/// The pod's grace period follows the deadline cfy-init will use, wherever it is set.
#[test]
fn grace_period_is_derived_from_the_configured_shutdown_deadline() {
    for (sets, deadline, grace) in [
        (vec![], 30, 40),
        (vec!["shutdownDeadlineSeconds=45"], 45, 55),
        (vec!["config.supervise.shutdown_deadline=300s"], 300, 310),
        (vec!["config.supervise.shutdown_deadline=5m"], 300, 310),
        (
            vec![
                "config.supervise.shutdown_deadline=1m30s",
                "terminationGraceMarginSeconds=20",
            ],
            90,
            110,
        ),
        (vec!["config.supervise.shutdown_deadline=1500ms"], 2, 12),
        (
            vec![
                "shutdownDeadlineSeconds=10",
                "config.supervise.shutdown_deadline=2h",
            ],
            7200,
            7210,
        ),
    ] {
        let mut args = Vec::new();
        for s in &sets {
            args.extend(["--set", s]);
        }
        let docs = documents(&render(&args));
        let pod = &the_statefulset(&docs)["spec"]["template"]["spec"];
        assert_eq!(pod["terminationGracePeriodSeconds"], grace, "{sets:?}");
        let cfg: Value = serde_norway::from_str(&chart_config(&docs)).unwrap();
        let configured = seconds(cfg["supervise"]["shutdown_deadline"].as_str().unwrap());
        // cfy-init rounds nothing: 1500ms is 1.5 s, below the chart's rounded-up 2 s.
        assert!(
            configured <= deadline,
            "{sets:?}: {configured} > {deadline}"
        );
        assert!(configured + 5 <= grace, "{sets:?}");
    }
}

/// The ONAP preset: what OOM's dcae-cloudify-manager clients and mounts expect.
#[test]
fn onap_preset_is_a_drop_in_for_ooms_dcae_cloudify_manager() {
    let docs = documents(&render(&[
        "-f",
        onap_preset().to_str().unwrap(),
        "--set",
        "global.repository=registry.example:10001",
        "--set",
        "onap.certs.secretName=dcae-cm-certs",
        "--set",
        "onap.cmSecrets.secretName=dev-dcae-cloudify-manager-cm-pass",
        "--set",
        "persistence.existingClaim=dev-dcae-cloudify-manager-data",
    ]));
    // The Service OOM's clients use: same name, HTTPS on 443.
    let svc = of_kind(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "dcae-cloudify-manager")
        .expect("Service dcae-cloudify-manager");
    assert!(svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["port"] == 443 && p["targetPort"] == "https"));
    // A fixed host name: only a Deployment (Recreate) can have one.
    assert!(of_kind(&docs, "StatefulSet").is_empty());
    let deps = of_kind(&docs, "Deployment");
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0]["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(deps[0]["spec"]["replicas"], 1);
    let pod = &deps[0]["spec"]["template"]["spec"];
    assert_eq!(pod["hostname"], "dcae-cloudify-manager");
    assert_eq!(
        pod["hostAliases"],
        json!([{"ip": "127.0.0.1", "hostnames": ["dcae-cloudify-manager"]}])
    );
    assert_eq!(
        pod["imagePullSecrets"],
        json!([{"name": "onap-docker-registry-key"}])
    );
    let manager = container(pod, "manager");
    assert_eq!(
        manager["image"],
        "registry.example:10001/onap/org.onap.dcaegen2.deployments.cm-container:5.1.2-cfy-init"
    );
    let env = manager["env"].as_array().unwrap();
    assert!(
        env.contains(&json!({"name": "REQUESTS_CA_BUNDLE", "value": "/opt/onap/certs/cacert.pem"}))
    );
    // OOM's mounts, each from the volume OOM used.
    let volume = |mount_path: &str| -> Value {
        let m = manager["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
        let mut v = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap()
            .clone();
        v.as_object_mut().unwrap().remove("name");
        if let Some(sub) = m.get("subPath") {
            v["subPath"] = sub.clone();
        }
        v
    };
    assert_eq!(
        volume("/opt/onap/config.txt"),
        json!({"configMap": {"name": "dcae-cloudify-manager-onap"}, "subPath": "config.txt"})
    );
    assert_eq!(
        volume("/opt/onap/kube"),
        json!({"configMap": {"name": "multisite-kubeconfig-configmap"}})
    );
    assert_eq!(
        volume("/opt/onap/certs"),
        json!({"secret": {"secretName": "dcae-cm-certs"}})
    );
    assert_eq!(
        volume("/opt/onap/cm-secrets")["secret"]["items"],
        json!([{"key": "password", "path": "password"}])
    );
    assert_eq!(
        volume("/cfy-persist"),
        json!({"persistentVolumeClaim": {"claimName": "dev-dcae-cloudify-manager-data"}})
    );
    // The kept claim is not created (nor owned) by this release.
    assert!(!of_kind(&docs, "PersistentVolumeClaim")
        .iter()
        .any(|c| c["metadata"]["name"] == "dev-dcae-cloudify-manager-data"));
    let config_txt = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "dcae-cloudify-manager-onap")
        .unwrap()["data"]["config.txt"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(config_txt, "[consul]\naddress=consul-server:8500\n");
    // A StatefulSet cannot have a fixed host name: asking for one is an error, not ignored.
    let (ok, err) = try_render(&["--set", "hostname=dcae-cloudify-manager"]);
    assert!(!ok && err.contains("Deployment"), "{err}");
}

/// Pod template labels, the snapshot volume, the `helm test` hook on /readyz.
#[test]
fn pod_labels_snapshot_volume_and_the_helm_test_hook() {
    let docs = all_options_docs();
    let sts = the_statefulset(&docs);
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["tier"], "dcae", "podLabels");
    assert_eq!(labels["app.kubernetes.io/name"], "cfy-manager");
    assert_eq!(labels["app.kubernetes.io/version"], "5.1.2");
    let pod = &sts["spec"]["template"]["spec"];
    let manager = container(pod, "manager");
    assert!(manager["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "snapshots" && m["mountPath"] == "/cfy-persist-snapshots"));
    let cfg: Value = serde_norway::from_str(&chart_config(&docs)).unwrap();
    assert_eq!(cfg["snapshot"]["archive_dir"], "/cfy-persist-snapshots");
    assert_eq!(cfg["snapshot"]["keep"], 8);

    let tests: Vec<&Value> = of_kind(&docs, "Pod")
        .into_iter()
        .filter(|p| p["metadata"]["annotations"]["helm.sh/hook"] == "test")
        .collect();
    assert_eq!(tests.len(), 1, "one helm test pod");
    let c = &tests[0]["spec"]["containers"][0];
    assert_eq!(c["command"], json!(["/usr/local/bin/cfy-init", "ready"]));
    let url = c["env"][0]["value"].as_str().unwrap();
    assert_eq!(url, "http://dcae-cloudify-manager-headless.onap.svc:9443");
    // The headless Service carries the hooks port the test reaches.
    let headless = of_kind(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "dcae-cloudify-manager-headless")
        .unwrap();
    assert!(headless["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["port"] == 9443 && p["targetPort"] == "hooks"));
}

#[test]
fn metrics_options_render_annotations_and_a_service_monitor() {
    let docs = all_options_docs();
    let pod = &the_statefulset(&docs)["spec"]["template"];
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9443");
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    let monitors = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitors.len(), 1);
    let m = monitors[0];
    assert_eq!(m["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "hooks"
    );
    let ep = &m["spec"]["endpoints"][0];
    assert_eq!(ep["port"], "hooks");
    assert_eq!(ep["path"], "/metrics");
    assert_eq!(ep["interval"], "30s");
    assert_eq!(
        ep["bearerTokenSecret"],
        json!({"name": "dcae-cloudify-manager-hooks", "key": "token"})
    );
    // Off by default.
    let docs = default_docs();
    assert!(of_kind(&docs, "ServiceMonitor").is_empty());
    assert!(
        the_statefulset(&docs)["spec"]["template"]["metadata"]["annotations"]
            .get("prometheus.io/scrape")
            .is_none()
    );
}

/// cfy-init's own default of `snapshot.remote.container`, from `cfy-init config schema`.
fn cfy_init_default_container() -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cfy-init"))
        .args(["config", "schema"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let schema: Value = serde_json::from_slice(&out.stdout).unwrap();
    schema["definitions"]["RemoteConfig"]["properties"]["container"]["default"]
        .as_str()
        .unwrap_or_else(|| panic!("no RemoteConfig.container default in cfy-init's schema"))
        .to_string()
}

/// The recovery sidecar gets `config.snapshot.remote`'s Swift container as
/// CFY_RECOVER_REMOTE_SNAPSHOTS (cfy-init's own default when the container is not set), the
/// same the manager's cfy-init config uploads to; without `snapshot.remote` nothing; an
/// `extraEnv` entry of that name replaces the chart's. Every rendering is a valid StatefulSet.
#[test]
fn the_recovery_sidecar_gets_the_remote_snapshot_container_only_with_snapshot_remote() {
    const NAME: &str = "CFY_RECOVER_REMOTE_SNAPSHOTS";
    let dir = tempfile::tempdir().unwrap();
    let all = all_options().to_str().unwrap().to_string();
    let sidecar_env = |case: &str, extra: &[&str]| -> (Vec<Value>, Value) {
        let docs = documents(&render(extra));
        let sts = the_statefulset(&docs);
        let file = dir.path().join(format!("{case}.yaml"));
        std::fs::write(&file, serde_json::to_string(sts).unwrap()).unwrap();
        let (ok, out) = kubernetes_validate(&file);
        assert!(
            ok,
            "{case}: not valid for Kubernetes {KUBE_VERSION}:\n{out}"
        );
        let sidecar = container(&sts["spec"]["template"]["spec"], "recovery");
        let env: Vec<Value> = sidecar["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == NAME)
            .cloned()
            .collect();
        let cfg: Value = serde_norway::from_str(&chart_config(&docs)).unwrap();
        (env, cfg["snapshot"]["remote"].clone())
    };
    let set = |v: &str| json!([{"name": NAME, "value": v}]);

    // All options: remote with its container; the sidecar reads the container cfy-init writes.
    let (env, remote) = sidecar_env("remote", &["-f", &all]);
    assert_eq!(Value::from(env), set("dcae-cm-snapshots"));
    assert_eq!(remote["container"], "dcae-cm-snapshots");

    // snapshot.remote taken away again: nothing.
    let (env, remote) = sidecar_env(
        "remote-removed",
        &["-f", &all, "--set", "config.snapshot.remote=null"],
    );
    assert!(remote.is_null(), "{remote}");
    assert_eq!(env, Vec::<Value>::new());

    // The sidecar alone with the default values: nothing.
    let (env, remote) = sidecar_env("no-remote", &["--set", "recoverySidecar.enabled=true"]);
    assert!(remote.is_null(), "{remote}");
    assert_eq!(env, Vec::<Value>::new());

    // Remote without a container: cfy-init's default, as cfy-init itself would use.
    let (env, remote) = sidecar_env(
        "default-container",
        &[
            "--set",
            "recoverySidecar.enabled=true",
            "--set",
            "config.snapshot.remote.cloud=openstack",
        ],
    );
    assert!(remote.get("container").is_none(), "{remote}");
    assert_eq!(Value::from(env), set(&cfy_init_default_container()));

    // The operator's own entry (here: the volume alone) replaces the chart's, once.
    let (env, _) = sidecar_env(
        "own-entry",
        &[
            "-f",
            &all,
            "--set-json",
            &format!("recoverySidecar.extraEnv=[{{\"name\":\"{NAME}\",\"value\":\"\"}}]"),
        ],
    );
    assert_eq!(Value::from(env), set(""));
}
