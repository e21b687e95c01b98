//! The chart's rendered pod really runs: `helm template` of the chart (default values, the
//! images built from this tree, the stand-in's services under `config:`), then its
//! StatefulSet's pod run the way a kubelet would (tests/common/kubelet.rs: every field of the
//! pod honoured or the test fails), on Docker with the production images. Pass: started and
//! ready within the startup probe's budget, the manager exits 0 within the grace period on
//! SIGTERM, and the data written in the first pod is there in a second pod on the same claims.

#[path = "common/docker.rs"]
mod docker;
#[path = "common/helm.rs"]
mod helm;
#[path = "common/kubelet.rs"]
mod kubelet;

use std::collections::BTreeMap;
use std::time::Duration;

use docker::*;
use serde_json::{json, Value};

const PSQL: &str =
    "/usr/lib/postgresql/15/bin/psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -tA";

/// Values for the test: the images under test (present locally), the stand-in's services
/// (docker/standin/cfy-init.yaml) as `config:`, probes polled every 2 s.
fn values(images: &Images) -> Value {
    let standin: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("docker/standin/cfy-init.yaml")).unwrap(),
    )
    .unwrap();
    let (repo_m, tag_m) = images.manager.rsplit_once(':').unwrap();
    json!({
        "image": {"repository": repo_m, "tag": tag_m, "pullPolicy": "IfNotPresent"},
        "config": {
            "supervise": standin["supervise"],
            "snapshot": standin["snapshot"],
        },
        "probes": {
            "startup": {"periodSeconds": 2, "failureThreshold": 150, "timeoutSeconds": 2},
            "readiness": {"periodSeconds": 2, "failureThreshold": 3, "timeoutSeconds": 2},
            "liveness": {"periodSeconds": 5, "failureThreshold": 3, "timeoutSeconds": 2},
        },
        // The test machine has 2 cores: the chart's default requests would not fit a node.
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
    })
}

fn sh(container: &str, script: &str) -> String {
    docker::sh(container, script)
}

#[test]
fn the_rendered_statefulset_pod_runs_stops_within_grace_and_keeps_its_data() {
    let _serial = serial();
    let images = images();
    let dir = tempfile::tempdir().unwrap();
    let values_file = dir.path().join("values.yaml");
    std::fs::write(
        &values_file,
        serde_norway::to_string(&values(images)).unwrap(),
    )
    .unwrap();
    let docs = helm::documents(&helm::render(&["-f", values_file.to_str().unwrap()]));
    let sts = helm::of_kind(&docs, "StatefulSet")[0].clone();
    let tpl = &sts["spec"]["template"];
    let pod_name = format!("{}-0", sts["metadata"]["name"].as_str().unwrap());
    let cluster = kubelet::Cluster::new("onap", docs.clone());

    let mut cleanup = Cleanup::default();
    // The StatefulSet's claims (store-<pod>, snapshots-<pod>) as named volumes, kept across
    // both pods.
    let prefix = unique("pod");
    let mut claims = BTreeMap::new();
    for t in sts["spec"]["volumeClaimTemplates"].as_array().unwrap() {
        let name = t["metadata"]["name"].as_str().unwrap().to_string();
        let v = kubelet::claim_volume(&prefix, &format!("{name}-{pod_name}"));
        cleanup.volume(&v);
        claims.insert(name, v);
    }
    let startup = &tpl["spec"]["containers"][0]["startupProbe"];
    let budget = Duration::from_secs(
        startup["periodSeconds"].as_u64().unwrap() * startup["failureThreshold"].as_u64().unwrap(),
    );
    let grace = Duration::from_secs(
        tpl["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap(),
    );

    let marker = format!("pod{}", std::process::id());
    for round in 1..=2 {
        let mut pod_cleanup = Cleanup::default();
        let pod = kubelet::run_pod(
            &cluster,
            tpl,
            &format!("{prefix}-{round}"),
            &claims,
            &mut pod_cleanup,
        );
        let took = pod.wait_healthy();
        eprintln!("round {round}: started and ready in {took:?} (startup budget {budget:?})");
        assert!(
            took <= budget,
            "round {round}: {took:?} over the budget {budget:?}"
        );
        let manager = &pod.container("manager").docker_name;
        assert_eq!(sh(manager, "cat /proc/1/comm"), "cfy-init");
        // env from the Secret, the projected service account linked where clients look.
        let password = String::from_utf8(
            base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                helm::of_kind(&docs, "Secret")
                    .into_iter()
                    .find(|s| s["metadata"]["name"].as_str().unwrap().ends_with("-admin"))
                    .unwrap()["data"]["password"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            sh(manager, "grep -c -F \"$CMPASS\" /etc/cloudify/config.yaml"),
            "1",
            "round {round}: the admin password from the Secret is not in config.yaml"
        );
        assert!(sh(manager, "printenv CMPASS") == password);
        assert_eq!(
            sh(
                manager,
                "cat /var/run/secrets/kubernetes.io/serviceaccount/token"
            ),
            cluster.service_account_token
        );
        assert_eq!(
            sh(
                manager,
                "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace"
            ),
            "onap"
        );
        // The hardening really applied: no_new_privs and the dropped capabilities.
        let status = sh(manager, "grep -E '^(NoNewPrivs|CapBnd)' /proc/1/status");
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        if round == 1 {
            sh(
                manager,
                &format!(
                    "{PSQL} -c 'create table cfy_test (marker text)' \
                     -c \"insert into cfy_test values ('{marker}')\""
                ),
            );
        } else {
            assert_eq!(
                sh(
                    manager,
                    &format!(
                        "{PSQL} -c \"select count(*) from cfy_test where marker = '{marker}'\""
                    )
                ),
                "1",
                "the row written in the first pod is gone"
            );
        }
        pod.assert_stays_healthy(2);
        for (name, code, took) in pod.stop() {
            eprintln!("round {round}: {name} exited {code} after {took:?} (grace {grace:?})");
            assert_eq!(
                code,
                0,
                "round {round}: {name} exit code {code} (137: SIGKILL after the grace period)\n{}",
                log_tail(&pod.container(&name).docker_name, 40)
            );
            assert!(
                took < grace,
                "round {round}: {name} took {took:?}, grace {grace:?}"
            );
        }
        let log = logs(manager);
        assert!(
            log.contains("database system is shut down"),
            "round {round}: PostgreSQL did not shut down cleanly:\n{}",
            log_tail(manager, 40)
        );
        drop(pod_cleanup);
    }
    drop(cleanup);
}
