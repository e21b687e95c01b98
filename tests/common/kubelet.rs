//! A kubelet stand-in for one rendered pod template, on Docker: what a kubelet does with each
//! field of the pod, done with `docker run` and friends, so that the chart's rendered
//! StatefulSet can be run with the built images. Every field it knows is honoured; any other
//! field fails the test (`Unhonoured`), never silently skipped.
//!
//! - the pod sandbox: a container holding the network, IPC and UTS namespaces (host name,
//!   host aliases) that every container of the pod joins, as the kubelet's pause container;
//! - volumes: persistentVolumeClaim and volumeClaimTemplates as named Docker volumes,
//!   emptyDir as a Docker volume (tmpfs with its sizeLimit when `medium: Memory`), configMap,
//!   secret and projected (serviceAccountToken, configMap, downwardAPI) as files with their
//!   modes, bind-mounted read-only; subPath mounts;
//! - containers: image (never pulled: `Always` cannot be honoured), command / args with the
//!   image's entry point semantics, env (value, secretKeyRef, configMapKeyRef, fieldRef),
//!   securityContext (capabilities, no-new-privileges, user/group, read-only root,
//!   privileged false), resources (memory and CPU limits, CPU request as shares);
//! - probes: httpGet startup, readiness and liveness probes, polled per period with the
//!   timeout and failure threshold, against the pod's IP;
//! - stop: SIGTERM to every container, `terminationGracePeriodSeconds`, then SIGKILL.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use super::docker::{docker, docker_ok, run_limited, Cleanup};

/// Objects the API server would hold besides the rendered ones (the cluster's own).
pub struct Cluster {
    pub namespace: String,
    pub objects: Vec<Value>,
    /// The token the kubelet would request for the pod's service account.
    pub service_account_token: String,
}

impl Cluster {
    /// The rendered objects plus `kube-root-ca.crt`, the ConfigMap every namespace has.
    pub fn new(namespace: &str, rendered: Vec<Value>) -> Cluster {
        let mut objects = rendered;
        objects.push(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": namespace},
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\ntest cluster CA\n-----END CERTIFICATE-----\n"}
        }));
        Cluster {
            namespace: namespace.to_string(),
            objects,
            service_account_token: "test-service-account-token".into(),
        }
    }

    fn find(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} is neither rendered nor in the cluster"))
    }

    /// A ConfigMap's or Secret's data, decoded.
    fn data(&self, kind: &str, name: &str) -> BTreeMap<String, Vec<u8>> {
        let o = self.find(kind, name);
        let mut out = BTreeMap::new();
        for (k, v) in o["data"].as_object().into_iter().flatten() {
            let s = v.as_str().unwrap();
            let bytes = if kind == "Secret" {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .unwrap_or_else(|e| panic!("Secret {name} key {k}: {e}"))
            } else {
                s.as_bytes().to_vec()
            };
            out.insert(k.clone(), bytes);
        }
        for (k, v) in o["stringData"].as_object().into_iter().flatten() {
            out.insert(k.clone(), v.as_str().unwrap().as_bytes().to_vec());
        }
        out
    }
}

/// A field of the pod this stand-in does not honour: the test must fail.
#[track_caller]
fn unhonoured(what: &str, v: &Value) -> ! {
    panic!("the kubelet stand-in cannot honour {what}: {v}")
}

/// Keys of `obj` outside `known` fail the test.
#[track_caller]
fn only(obj: &Value, known: &[&str], what: &str) {
    for k in obj.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !known.contains(&k.as_str()) {
            unhonoured(&format!("{what}.{k}"), &obj[k]);
        }
    }
}

/// One probe, as the kubelet runs it.
#[derive(Clone, Debug)]
pub struct Probe {
    pub path: String,
    pub port: u16,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

impl Probe {
    fn parse(p: &Value, ports: &BTreeMap<String, u16>, what: &str) -> Probe {
        only(
            p,
            &[
                "httpGet",
                "periodSeconds",
                "timeoutSeconds",
                "failureThreshold",
                "successThreshold",
                "initialDelaySeconds",
            ],
            what,
        );
        if p.get("initialDelaySeconds").is_some_and(|v| v != 0) {
            unhonoured(&format!("{what}.initialDelaySeconds"), p);
        }
        let get = &p["httpGet"];
        only(get, &["path", "port", "scheme"], &format!("{what}.httpGet"));
        if get.get("scheme").is_some_and(|s| s != "HTTP") {
            unhonoured(&format!("{what}.httpGet.scheme"), get);
        }
        let port = match &get["port"] {
            Value::String(name) => *ports
                .get(name)
                .unwrap_or_else(|| panic!("{what}: no container port named {name}")),
            Value::Number(n) => n.as_u64().unwrap() as u16,
            other => unhonoured(&format!("{what}.httpGet.port"), other),
        };
        let secs = |k: &str, d: u64| Duration::from_secs(p[k].as_u64().unwrap_or(d));
        Probe {
            path: get["path"].as_str().unwrap_or("/").to_string(),
            port,
            period: secs("periodSeconds", 10),
            timeout: secs("timeoutSeconds", 1),
            failure_threshold: p["failureThreshold"].as_u64().unwrap_or(3) as u32,
            success_threshold: p["successThreshold"].as_u64().unwrap_or(1) as u32,
        }
    }

    /// One attempt: an HTTP GET within the timeout; 200-399 is success.
    pub fn once(&self, ip: &str) -> bool {
        let url = format!("http://{ip}:{}{}", self.port, self.path);
        let out = run_limited(
            std::process::Command::new("curl").args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                &self.timeout.as_secs().max(1).to_string(),
                &url,
            ]),
            self.timeout + Duration::from_secs(5),
        );
        let code: u32 = out.stdout.trim().parse().unwrap_or(0);
        (200..400).contains(&code)
    }
}

/// A container of the pod after translation.
pub struct ContainerRun {
    pub name: String,
    pub docker_name: String,
    pub startup: Option<Probe>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
}

/// A running pod.
pub struct Pod {
    pub name: String,
    pub sandbox: String,
    pub ip: String,
    pub containers: Vec<ContainerRun>,
    pub grace: Duration,
    files: tempfile::TempDir,
}

/// The Docker volume standing for a claim, created if missing; the caller removes it.
pub fn claim_volume(prefix: &str, claim: &str) -> String {
    let v = format!("{prefix}-pvc-{claim}");
    docker_ok(&["volume", "create", &v], Duration::from_secs(30));
    v
}

fn mode_of(v: &Value, default: u32) -> u32 {
    v.as_u64().map(|m| m as u32).unwrap_or(default)
}

fn write_file(dir: &Path, rel: &str, bytes: &[u8], mode: u32) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Parse a Kubernetes quantity of bytes (Mi, Gi, ...).
fn bytes_of(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (u, m) in units {
        if let Some(n) = q.strip_suffix(u) {
            return n.parse::<u64>().unwrap() * m;
        }
    }
    q.parse().unwrap_or_else(|_| panic!("quantity {q}"))
}

/// CPU quantity in milli-CPUs.
fn millicpu(q: &Value) -> u64 {
    let s = match q {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => unhonoured("cpu quantity", other),
    };
    match s.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => (s.parse::<f64>().unwrap() * 1000.0) as u64,
    }
}

/// Run the pod template `tpl` (spec.template of a StatefulSet or Deployment) named `pod_name`.
/// `claims` maps each volume name backed by a claim (template or persistentVolumeClaim) to
/// its Docker volume. Containers and emptyDir volumes go into `cleanup`.
pub fn run_pod(
    cluster: &Cluster,
    tpl: &Value,
    pod_name: &str,
    claims: &BTreeMap<String, String>,
    cleanup: &mut Cleanup,
) -> Pod {
    only(tpl, &["metadata", "spec"], "template");
    let spec = &tpl["spec"];
    only(
        spec,
        &[
            "serviceAccountName",
            "automountServiceAccountToken",
            "terminationGracePeriodSeconds",
            "securityContext",
            "containers",
            "volumes",
            "imagePullSecrets",
            "hostname",
            "subdomain",
            "hostAliases",
        ],
        "pod spec",
    );
    if spec["automountServiceAccountToken"] != false {
        unhonoured(
            "pod spec.automountServiceAccountToken (not false)",
            &spec["automountServiceAccountToken"],
        );
    }
    let psc = &spec["securityContext"];
    only(psc, &["seccompProfile"], "pod securityContext");
    if !psc["seccompProfile"].is_null() && psc["seccompProfile"]["type"] != "RuntimeDefault" {
        unhonoured("pod securityContext.seccompProfile", psc);
    }
    let grace = Duration::from_secs(spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
    let files = tempfile::tempdir().unwrap();

    // Volumes: each becomes a `-v` / `--mount` source.
    enum Source {
        Docker(String),
        Dir(PathBuf),
    }
    let mut sources: BTreeMap<String, Source> = BTreeMap::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap().to_string();
        let dir = files.path().join(&name);
        let kinds: Vec<&String> = v
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "name")
            .collect();
        assert_eq!(kinds.len(), 1, "volume {name}: {v}");
        let source = match kinds[0].as_str() {
            "persistentVolumeClaim" => {
                only(
                    &v["persistentVolumeClaim"],
                    &["claimName"],
                    "persistentVolumeClaim",
                );
                Source::Docker(claims.get(&name).cloned().unwrap_or_else(|| {
                    panic!(
                        "volume {name}: no Docker volume for claim {}",
                        v["persistentVolumeClaim"]["claimName"]
                    )
                }))
            }
            "emptyDir" => {
                let e = &v["emptyDir"];
                only(e, &["medium", "sizeLimit"], "emptyDir");
                let dv = format!("{pod_name}-{name}");
                let mut args = vec!["volume".to_string(), "create".into()];
                if e["medium"] == "Memory" {
                    let size = e["sizeLimit"].as_str().map(bytes_of);
                    args.extend([
                        "--opt".into(),
                        "type=tmpfs".into(),
                        "--opt".into(),
                        "device=tmpfs".into(),
                    ]);
                    if let Some(size) = size {
                        args.extend(["--opt".into(), format!("o=size={size}")]);
                    }
                } else if !e["medium"].is_null() && e["medium"] != "" {
                    unhonoured("emptyDir.medium", e);
                } else if !e["sizeLimit"].is_null() {
                    unhonoured("emptyDir.sizeLimit on disk", e);
                }
                args.push(dv.clone());
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                docker_ok(&args, Duration::from_secs(30));
                cleanup.volume(&dv);
                Source::Docker(dv)
            }
            "configMap" | "secret" => {
                let kind = kinds[0].as_str();
                let c = &v[kind];
                let (obj_kind, obj_name) = if kind == "secret" {
                    only(c, &["secretName", "defaultMode", "items"], "secret volume");
                    ("Secret", c["secretName"].as_str().unwrap())
                } else {
                    only(c, &["name", "defaultMode", "items"], "configMap volume");
                    ("ConfigMap", c["name"].as_str().unwrap())
                };
                let mode = mode_of(&c["defaultMode"], 0o644);
                let data = cluster.data(obj_kind, obj_name);
                std::fs::create_dir_all(&dir).unwrap();
                match c["items"].as_array() {
                    Some(items) => {
                        for it in items {
                            only(it, &["key", "path", "mode"], "volume items");
                            let key = it["key"].as_str().unwrap();
                            let bytes = data.get(key).unwrap_or_else(|| {
                                panic!("{obj_kind} {obj_name} has no key {key}")
                            });
                            write_file(
                                &dir,
                                it["path"].as_str().unwrap(),
                                bytes,
                                mode_of(&it["mode"], mode),
                            );
                        }
                    }
                    None => {
                        for (k, bytes) in &data {
                            write_file(&dir, k, bytes, mode);
                        }
                    }
                }
                Source::Dir(dir)
            }
            "projected" => {
                let p = &v["projected"];
                only(p, &["defaultMode", "sources"], "projected");
                let mode = mode_of(&p["defaultMode"], 0o644);
                std::fs::create_dir_all(&dir).unwrap();
                for s in p["sources"].as_array().unwrap() {
                    if let Some(t) = s.get("serviceAccountToken") {
                        only(
                            t,
                            &["path", "expirationSeconds", "audience"],
                            "serviceAccountToken",
                        );
                        write_file(
                            &dir,
                            t["path"].as_str().unwrap(),
                            cluster.service_account_token.as_bytes(),
                            mode,
                        );
                    } else if let Some(c) = s.get("configMap") {
                        only(c, &["name", "items"], "projected configMap");
                        let data = cluster.data("ConfigMap", c["name"].as_str().unwrap());
                        for it in c["items"].as_array().unwrap() {
                            only(it, &["key", "path"], "projected configMap items");
                            write_file(
                                &dir,
                                it["path"].as_str().unwrap(),
                                &data[it["key"].as_str().unwrap()],
                                mode,
                            );
                        }
                    } else if let Some(d) = s.get("downwardAPI") {
                        only(d, &["items"], "projected downwardAPI");
                        for it in d["items"].as_array().unwrap() {
                            only(it, &["path", "fieldRef"], "downwardAPI items");
                            let value = field_ref(cluster, pod_name, &it["fieldRef"]);
                            write_file(&dir, it["path"].as_str().unwrap(), value.as_bytes(), mode);
                        }
                    } else {
                        unhonoured("projected source", s);
                    }
                }
                Source::Dir(dir)
            }
            other => unhonoured(&format!("volume kind {other}"), v),
        };
        sources.insert(name, source);
    }
    // The StatefulSet controller adds a volume per volumeClaimTemplate, bound to its claim.
    for (name, volume) in claims {
        sources
            .entry(name.clone())
            .or_insert_with(|| Source::Docker(volume.clone()));
    }

    // The sandbox: the pod's network, IPC and UTS namespaces.
    let sandbox = format!("{pod_name}-sandbox");
    let first_image = spec["containers"][0]["image"].as_str().unwrap();
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        sandbox.clone(),
        "--ipc".into(),
        "shareable".into(),
    ];
    if let Some(h) = spec["hostname"].as_str() {
        args.extend(["--hostname".into(), h.into()]);
        if let Some(sub) = spec["subdomain"].as_str() {
            args.extend([
                "--domainname".into(),
                format!("{sub}.{}.svc.cluster.local", cluster.namespace),
            ]);
        }
    } else {
        // The kubelet names the pod's host after the pod.
        args.extend(["--hostname".into(), pod_name.into()]);
    }
    for a in spec["hostAliases"].as_array().into_iter().flatten() {
        only(a, &["ip", "hostnames"], "hostAliases");
        for h in a["hostnames"].as_array().unwrap() {
            args.extend([
                "--add-host".into(),
                format!("{}:{}", h.as_str().unwrap(), a["ip"].as_str().unwrap()),
            ]);
        }
    }
    args.extend([
        "--entrypoint".into(),
        "sleep".into(),
        first_image.into(),
        "infinity".into(),
    ]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    docker_ok(&a, Duration::from_secs(60));
    cleanup.container(&sandbox);
    let ip = docker_ok(
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &sandbox,
        ],
        Duration::from_secs(30),
    );

    let mut containers = Vec::new();
    for c in spec["containers"].as_array().unwrap() {
        only(
            c,
            &[
                "name",
                "image",
                "imagePullPolicy",
                "command",
                "args",
                "env",
                "ports",
                "startupProbe",
                "readinessProbe",
                "livenessProbe",
                "securityContext",
                "resources",
                "volumeMounts",
            ],
            "container",
        );
        let name = c["name"].as_str().unwrap().to_string();
        let image = c["image"].as_str().unwrap();
        match c["imagePullPolicy"].as_str() {
            Some("IfNotPresent") | Some("Never") => {}
            other => unhonoured(
                "imagePullPolicy (images cannot be pulled here)",
                &serde_json::json!(other),
            ),
        }
        let docker_name = format!("{pod_name}-{name}");
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            docker_name.clone(),
            "--network".into(),
            format!("container:{sandbox}"),
            "--ipc".into(),
            format!("container:{sandbox}"),
            // The kubelet's restartPolicy Always is the test's failure: no restart here.
            "--restart".into(),
            "no".into(),
        ];
        // securityContext
        let sc = &c["securityContext"];
        only(
            sc,
            &[
                "privileged",
                "allowPrivilegeEscalation",
                "capabilities",
                "readOnlyRootFilesystem",
                "runAsUser",
                "runAsGroup",
                "runAsNonRoot",
            ],
            "securityContext",
        );
        if sc["privileged"] == true {
            unhonoured(
                "securityContext.privileged: true (the test never grants it)",
                sc,
            );
        }
        if sc["allowPrivilegeEscalation"] == false {
            args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        let caps = &sc["capabilities"];
        only(caps, &["drop", "add"], "capabilities");
        for d in caps["drop"].as_array().into_iter().flatten() {
            args.extend(["--cap-drop".into(), d.as_str().unwrap().into()]);
        }
        for a in caps["add"].as_array().into_iter().flatten() {
            args.extend(["--cap-add".into(), a.as_str().unwrap().into()]);
        }
        if sc["readOnlyRootFilesystem"] == true {
            args.push("--read-only".into());
        }
        match (sc["runAsUser"].as_u64(), sc["runAsGroup"].as_u64()) {
            (Some(u), Some(g)) => args.extend(["--user".into(), format!("{u}:{g}")]),
            (Some(u), None) => args.extend(["--user".into(), u.to_string()]),
            (None, Some(_)) => unhonoured("runAsGroup without runAsUser", sc),
            (None, None) => {}
        }
        if sc["runAsNonRoot"] == true && sc["runAsUser"].as_u64().unwrap_or(0) == 0 {
            unhonoured("runAsNonRoot without a non-zero runAsUser", sc);
        }
        // resources
        let res = &c["resources"];
        only(res, &["requests", "limits"], "resources");
        only(&res["limits"], &["cpu", "memory"], "resources.limits");
        only(&res["requests"], &["cpu", "memory"], "resources.requests");
        if let Some(m) = res["limits"]["memory"].as_str() {
            args.extend(["--memory".into(), bytes_of(m).to_string()]);
        }
        if !res["limits"]["cpu"].is_null() {
            args.extend([
                "--cpus".into(),
                format!("{:.3}", millicpu(&res["limits"]["cpu"]) as f64 / 1000.0),
            ]);
        }
        if !res["requests"]["cpu"].is_null() {
            // What the kubelet does with a CPU request: cgroup shares.
            args.extend([
                "--cpu-shares".into(),
                ((millicpu(&res["requests"]["cpu"]) * 1024 / 1000).max(2)).to_string(),
            ]);
        }
        // (A memory request only steers scheduling.)
        // env
        for e in c["env"].as_array().into_iter().flatten() {
            only(e, &["name", "value", "valueFrom"], "env");
            let n = e["name"].as_str().unwrap();
            let value = if let Some(v) = e.get("value") {
                v.as_str().unwrap().to_string()
            } else {
                let from = &e["valueFrom"];
                only(
                    from,
                    &["secretKeyRef", "configMapKeyRef", "fieldRef"],
                    "env.valueFrom",
                );
                if let Some(r) = from.get("secretKeyRef") {
                    let data = cluster.data("Secret", r["name"].as_str().unwrap());
                    String::from_utf8(data[r["key"].as_str().unwrap()].clone()).unwrap()
                } else if let Some(r) = from.get("configMapKeyRef") {
                    let data = cluster.data("ConfigMap", r["name"].as_str().unwrap());
                    String::from_utf8(data[r["key"].as_str().unwrap()].clone()).unwrap()
                } else {
                    field_ref(cluster, pod_name, &from["fieldRef"])
                }
            };
            args.extend(["-e".into(), format!("{n}={value}")]);
        }
        // ports: all in the sandbox's network namespace, named for the probes.
        let mut ports = BTreeMap::new();
        for p in c["ports"].as_array().into_iter().flatten() {
            only(p, &["name", "containerPort", "protocol"], "ports");
            if p.get("protocol").is_some_and(|x| x != "TCP") {
                unhonoured("ports.protocol", p);
            }
            if let Some(n) = p["name"].as_str() {
                ports.insert(n.to_string(), p["containerPort"].as_u64().unwrap() as u16);
            }
        }
        // volume mounts
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            only(
                m,
                &["name", "mountPath", "readOnly", "subPath"],
                "volumeMounts",
            );
            let vname = m["name"].as_str().unwrap();
            let ro = m["readOnly"] == true;
            let target = m["mountPath"].as_str().unwrap();
            let source = sources
                .get(vname)
                .unwrap_or_else(|| panic!("mount of unknown volume {vname}"));
            let spec = match (source, m["subPath"].as_str()) {
                (Source::Dir(d), Some(sub)) => {
                    format!("type=bind,source={},target={target}", d.join(sub).display())
                }
                (Source::Dir(d), None) => {
                    format!("type=bind,source={},target={target}", d.display())
                }
                (Source::Docker(v), None) => format!("type=volume,source={v},target={target}"),
                (Source::Docker(v), Some(sub)) => {
                    format!("type=volume,source={v},target={target},volume-subpath={sub}")
                }
            };
            // The kubelet mounts configMap, secret and projected volumes read-only always.
            let ro = ro || matches!(source, Source::Dir(_));
            args.extend([
                "--mount".into(),
                if ro { format!("{spec},readonly") } else { spec },
            ]);
        }
        // command / args: command replaces the image's entry point, args its CMD.
        let command: Vec<String> = c["command"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        let cargs: Vec<String> = c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        if let Some((first, rest)) = command.split_first() {
            args.extend(["--entrypoint".into(), first.clone(), image.into()]);
            args.extend(rest.iter().cloned());
        } else {
            args.push(image.into());
        }
        args.extend(cargs);
        let startup = c
            .get("startupProbe")
            .map(|p| Probe::parse(p, &ports, &format!("{name}.startupProbe")));
        let readiness = c
            .get("readinessProbe")
            .map(|p| Probe::parse(p, &ports, &format!("{name}.readinessProbe")));
        let liveness = c
            .get("livenessProbe")
            .map(|p| Probe::parse(p, &ports, &format!("{name}.livenessProbe")));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_ok(&a, Duration::from_secs(120));
        cleanup.container(&docker_name);
        containers.push(ContainerRun {
            name,
            docker_name,
            startup,
            readiness,
            liveness,
        });
    }
    Pod {
        name: pod_name.to_string(),
        sandbox,
        ip,
        containers,
        grace,
        files,
    }
}

fn field_ref(cluster: &Cluster, pod_name: &str, f: &Value) -> String {
    only(f, &["fieldPath", "apiVersion"], "fieldRef");
    match f["fieldPath"].as_str().unwrap() {
        "metadata.namespace" => cluster.namespace.clone(),
        "metadata.name" => pod_name.to_string(),
        other => unhonoured("fieldRef.fieldPath", &Value::String(other.into())),
    }
}

fn running(container: &str) -> bool {
    docker(
        &["inspect", "-f", "{{.State.Running}}", container],
        Duration::from_secs(30),
    )
    .stdout
    .trim()
        == "true"
}

impl Pod {
    /// The kubelet's probe loop until every container is started (startup probe) and ready
    /// (readiness probe), checking liveness meanwhile. Fails when a container exits, when a
    /// startup probe fails `failureThreshold` times in a row (the kubelet would kill it), or
    /// when a liveness probe does. Returns how long it took.
    pub fn wait_healthy(&self) -> Duration {
        let t0 = Instant::now();
        for c in &self.containers {
            if let Some(p) = &c.startup {
                let mut failures = 0;
                loop {
                    self.assert_running(c);
                    if p.once(&self.ip) {
                        break;
                    }
                    failures += 1;
                    assert!(
                        failures < p.failure_threshold,
                        "{}: startup probe {} failed {failures} times in a row (budget {:?}): the kubelet kills it\n{}",
                        c.name, p.path, p.period * p.failure_threshold, self.log_tail(c)
                    );
                    std::thread::sleep(p.period);
                }
            }
        }
        for c in &self.containers {
            let Some(p) = &c.readiness else { continue };
            let mut ok = 0;
            let mut live_failures = 0;
            let deadline = Instant::now() + p.period * p.failure_threshold.max(1) * 20;
            while ok < p.success_threshold {
                self.assert_running(c);
                if p.once(&self.ip) {
                    ok += 1
                } else {
                    ok = 0
                }
                if let Some(l) = &c.liveness {
                    if l.once(&self.ip) {
                        live_failures = 0
                    } else {
                        live_failures += 1
                    }
                    assert!(
                        live_failures < l.failure_threshold,
                        "{}: liveness probe failed {live_failures} times: the kubelet kills it",
                        c.name
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: not ready within {:?}\n{}",
                    c.name,
                    deadline - t0,
                    self.log_tail(c)
                );
                if ok < p.success_threshold {
                    std::thread::sleep(p.period);
                }
            }
        }
        t0.elapsed()
    }

    /// Liveness and readiness for `periods` periods of each probe, all passing.
    pub fn assert_stays_healthy(&self, periods: u32) {
        for c in &self.containers {
            for p in [&c.liveness, &c.readiness].into_iter().flatten() {
                for _ in 0..periods {
                    self.assert_running(c);
                    assert!(
                        p.once(&self.ip),
                        "{}: probe {} failed\n{}",
                        c.name,
                        p.path,
                        self.log_tail(c)
                    );
                    std::thread::sleep(p.period.min(Duration::from_secs(2)));
                }
            }
        }
    }

    fn assert_running(&self, c: &ContainerRun) {
        assert!(
            running(&c.docker_name),
            "{}: the container exited ({}) \n{}",
            c.name,
            docker(
                &["inspect", "-f", "{{.State.ExitCode}}", &c.docker_name],
                Duration::from_secs(30)
            )
            .stdout
            .trim(),
            self.log_tail(c)
        );
    }

    pub fn log_tail(&self, c: &ContainerRun) -> String {
        super::docker::log_tail(&c.docker_name, 40)
    }

    pub fn container(&self, name: &str) -> &ContainerRun {
        self.containers.iter().find(|c| c.name == name).unwrap()
    }

    /// The kubelet's stop: SIGTERM to every container, then SIGKILL to whatever still runs
    /// after the grace period. Returns each container's exit code and how long it took.
    pub fn stop(&self) -> Vec<(String, i32, Duration)> {
        let t0 = Instant::now();
        for c in &self.containers {
            docker_ok(
                &["kill", "-s", "TERM", &c.docker_name],
                Duration::from_secs(30),
            );
        }
        let deadline = t0 + self.grace;
        let mut out = Vec::new();
        for c in &self.containers {
            while running(&c.docker_name) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            if running(&c.docker_name) {
                let _ = docker(
                    &["kill", "-s", "KILL", &c.docker_name],
                    Duration::from_secs(30),
                );
                while running(&c.docker_name) {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            let code = docker_ok(
                &["inspect", "-f", "{{.State.ExitCode}}", &c.docker_name],
                Duration::from_secs(30),
            );
            out.push((c.name.clone(), code.parse().unwrap(), t0.elapsed()));
        }
        let _ = docker(&["rm", "-f", "-v", &self.sandbox], Duration::from_secs(60));
        out
    }
}
