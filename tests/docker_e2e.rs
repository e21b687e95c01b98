//! End-to-end tests of the manager image under a real Docker engine: the image built from
//! docker/Dockerfile FROM the stand-in base (Debian's PostgreSQL, RabbitMQ and nginx laid out
//! like the manager), run without --privileged, SYS_ADMIN, seccomp:unconfined, a cgroup mount
//! or a tmpfs on /run. The tests run one at a time (they share the engine and the images).

#[path = "common/docker.rs"]
mod docker;

use std::time::Duration;

use docker::*;

/// The stand-in image's services are defined in this config (see docker/standin/).
const STANDIN_CONFIG: &str = "CFY_INIT_CONFIG=/etc/cfy-init/standin.yaml";
/// Generous: RabbitMQ's first boot on a loaded 2-core machine.
const READY_LIMIT: Duration = Duration::from_secs(300);
/// The manager's state directories, as linked into the store.
const STATE_DIRS: &str = "/var/lib /etc/cloudify /opt/cfy /opt/cloudify /opt/cloudify-stage \
                          /opt/manager /opt/mgmtworker /opt/restservice";
const PSQL: &str =
    "/usr/lib/postgresql/15/bin/psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -tA";

/// Start a manager container; `volume` is mounted at /cfy-persist, `secret` at /secret.
fn run_manager(name: &str, volume: Option<&str>, secret: Option<&std::path::Path>) {
    run_manager_with(name, volume, secret, &[]);
}

fn run_manager_with(
    name: &str,
    volume: Option<&str>,
    secret: Option<&std::path::Path>,
    extra: &[&str],
) {
    let images = images();
    let mut args: Vec<String> = ["run", "-d", "--name", name, "-e", STANDIN_CONFIG]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    if let Some(v) = volume {
        args.extend(["-v".into(), format!("{v}:/cfy-persist")]);
    }
    if let Some(s) = secret {
        args.extend(["-v".into(), format!("{}:/secret:ro", s.display())]);
    }
    args.push(images.manager.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker_ok(&args, Duration::from_secs(120));
    assert_unprivileged(name);
}

/// What must not drift across restarts: where each state directory points, and the entries
/// of the directories that hold them (a legacy restart left `*-initial` copies behind).
fn layout(container: &str) -> String {
    sh(
        container,
        &format!(
            "for d in {STATE_DIRS}; do echo \"$d -> $(readlink -f $d)\"; done; \
             ls -A / /var /etc /opt | grep -v '^proc$'"
        ),
    )
}

/// The service-account files the test mounts at /secret.
fn secret_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "test-token-not-a-secret").unwrap();
    std::fs::write(dir.path().join("ca.crt"), "test-ca").unwrap();
    std::fs::write(dir.path().join("namespace"), "cfy-test-ns").unwrap();
    dir
}

fn assert_clean_stop(container: &str) {
    let code = stop(container);
    let log = logs(container);
    assert_eq!(
        code,
        0,
        "{container}: docker stop gave exit code {code} (137: killed after the 10 s grace); log tail:\n{}",
        log_tail(container, 60)
    );
    assert!(
        log.contains("database system is shut down"),
        "{container}: PostgreSQL did not log a clean shutdown; log tail:\n{}",
        log_tail(container, 60)
    );
    assert!(
        !log.contains("not properly shut down") && !log.contains("was interrupted"),
        "{container}: PostgreSQL recovered from an unclean shutdown; log:\n{log}"
    );
}

fn row_count(container: &str, marker: &str) -> String {
    sh(
        container,
        &format!("{PSQL} -c \"select count(*) from cfy_test where marker = '{marker}'\""),
    )
}

#[test]
fn volume_survives_stop_start_and_a_new_container() {
    let _serial = serial();
    let mut cleanup = Cleanup::default();
    let volume = unique("store");
    let first = unique("first");
    let second = unique("second");
    cleanup.volume(&volume);
    cleanup.container(&first);
    cleanup.container(&second);
    let secret = secret_dir();
    docker_ok(&["volume", "create", &volume], Duration::from_secs(30));

    // First boot: the empty volume is seeded from the image, the services come up, and the
    // admin password from CMPASS reaches Cloudify's config.yaml but never the log.
    let password = format!("pw-{}-{}", std::process::id(), "x#y: z");
    run_manager_with(
        &first,
        Some(&volume),
        Some(secret.path()),
        &["-e", &format!("CMPASS={password}")],
    );
    wait_ready(&first, READY_LIMIT);
    let found = exec(
        &first,
        &["grep", "-c", "-F", &password, "/etc/cloudify/config.yaml"],
    );
    assert_eq!(
        found.stdout.trim(),
        "1",
        "the admin password from CMPASS is not in /etc/cloudify/config.yaml"
    );
    assert!(
        !logs(&first).contains(&password),
        "the admin password appears in the container's log"
    );
    assert_eq!(
        sh(&first, "cat /proc/1/comm"),
        "cfy-init",
        "cfy-init is not PID 1"
    );
    let pg_data = sh(&first, "readlink -f /var/lib/pgsql/data");
    assert!(
        pg_data.starts_with("/cfy-persist/"),
        "PostgreSQL's data directory is not in the store: /var/lib/pgsql/data -> {pg_data}"
    );
    assert_eq!(
        sh(
            &first,
            "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace"
        ),
        "cfy-test-ns",
        "service-account credentials not linked from /secret"
    );
    let before = layout(&first);

    // Data written through the real PostgreSQL.
    let marker = format!("m{}", std::process::id());
    sh(
        &first,
        &format!(
            "{PSQL} -c 'create table cfy_test (marker text)' \
             -c \"insert into cfy_test values ('{marker}')\""
        ),
    );
    wait_healthy(&first, Duration::from_secs(120));

    // docker stop: SIGTERM, every service stopped in order, exit 0 within the grace period.
    assert_clean_stop(&first);

    // docker start of the same container: same layout (no drift), data still there.
    docker_ok(&["start", &first], Duration::from_secs(60));
    wait_ready(&first, READY_LIMIT);
    assert_eq!(layout(&first), before, "layout drifted across a restart");
    assert_eq!(row_count(&first, &marker), "1", "row lost across a restart");
    assert_clean_stop(&first);
    docker_ok(&["rm", &first], Duration::from_secs(60));

    // A new container on the same volume adopts the store: data still there.
    run_manager(&second, Some(&volume), Some(secret.path()));
    wait_ready(&second, READY_LIMIT);
    assert_eq!(
        row_count(&second, &marker),
        "1",
        "row lost in a new container"
    );
    assert_eq!(
        layout(&second),
        before,
        "a new container laid the store out differently"
    );
    assert_clean_stop(&second);
}

#[test]
fn runs_without_a_volume_and_says_so() {
    let _serial = serial();
    let mut cleanup = Cleanup::default();
    let name = unique("novolume");
    cleanup.container(&name);
    run_manager(&name, None, None);
    wait_ready(&name, READY_LIMIT);
    let log = logs(&name).to_lowercase();
    assert!(
        log.contains("no persistent storage") || log.contains("without persistence"),
        "the log does not say that the manager runs without persistence:\n{log}"
    );
    let pg_data = sh(&name, "readlink -f /var/lib/pgsql/data");
    assert_eq!(
        pg_data, "/var/lib/pgsql/data",
        "linked into a missing store"
    );
    sh(&name, &format!("{PSQL} -c 'select 1'"));
    assert_clean_stop(&name);
}

/// A volume seeded by the legacy start-persistent.sh (plain `cp -rp` copies at
/// `/cfy-persist/<dir>`, no state file of cfy-init's) is adopted with its data.
#[test]
fn legacy_volume_is_adopted_with_its_data() {
    let _serial = serial();
    let mut cleanup = Cleanup::default();
    let name = unique("adopt");
    let volume = unique("legacy-volume");
    cleanup.container(&name);
    cleanup.volume(&volume);
    let images = images();
    // What the legacy script's first boot left in the volume (2021 directory list).
    let legacy_seed = format!(
        "set -e; for d in {STATE_DIRS}; do mkdir -p /cfy-persist$(dirname $d); \
         cp -rp $d /cfy-persist$(dirname $d)/; done; \
         echo from-legacy > /cfy-persist/opt/manager/resources/legacy-marker"
    );
    let seeded = docker(
        &[
            "run",
            "--rm",
            "-v",
            &format!("{volume}:/cfy-persist"),
            "--entrypoint",
            "/bin/sh",
            &images.manager,
            "-c",
            &legacy_seed,
        ],
        Duration::from_secs(300),
    );
    assert!(seeded.ok(), "legacy seeding: {}", seeded.both());

    run_manager(&name, Some(&volume), None);
    wait_ready(&name, READY_LIMIT);
    assert_eq!(
        sh(&name, "cat /opt/manager/resources/legacy-marker"),
        "from-legacy",
        "the legacy store's data is not what the manager sees"
    );
    assert!(sh(&name, "readlink -f /var/lib/pgsql/data").starts_with("/cfy-persist/"));
    assert_clean_stop(&name);
}

/// Charts that still run the legacy CMD boot the same manager, with cfy-init as PID 1.
#[test]
fn legacy_start_persistent_entrypoint_boots_the_manager() {
    let _serial = serial();
    let mut cleanup = Cleanup::default();
    let name = unique("legacy-cmd");
    let volume = unique("legacy-store");
    cleanup.container(&name);
    cleanup.volume(&volume);
    let images = images();
    docker_ok(
        &[
            "run",
            "-d",
            "--name",
            &name,
            "-e",
            STANDIN_CONFIG,
            "-v",
            &format!("{volume}:/cfy-persist"),
            "--entrypoint",
            "/scripts/start-persistent.sh",
            &images.manager,
        ],
        Duration::from_secs(120),
    );
    assert_unprivileged(&name);
    wait_ready(&name, READY_LIMIT);
    assert_eq!(
        sh(&name, "cat /proc/1/comm"),
        "cfy-init",
        "start-persistent.sh did not exec cfy-init"
    );
    assert!(sh(&name, "readlink -f /var/lib/pgsql/data").starts_with("/cfy-persist/"));
    assert_clean_stop(&name);
}

#[test]
fn image_metadata_entrypoint_stopsignal_healthcheck() {
    let _serial = serial();
    let images = images();
    let cfg = |f: &str| {
        docker_ok(
            &["image", "inspect", "-f", f, &images.manager],
            Duration::from_secs(30),
        )
    };
    assert_eq!(
        cfg("{{json .Config.Entrypoint}}"),
        r#"["/usr/local/bin/cfy-init"]"#
    );
    assert_eq!(cfg("{{.Config.StopSignal}}"), "SIGTERM");
    assert_eq!(
        cfg("{{json .Config.Healthcheck.Test}}"),
        r#"["CMD","/usr/local/bin/cfy-init","ready"]"#
    );
    // No VOLUME: a run without -v must really run without a store.
    assert_eq!(cfg("{{json .Config.Volumes}}"), "null");
    // The default config baked into the image is valid for this binary.
    let check = docker(
        &[
            "run",
            "--rm",
            &images.manager,
            "config",
            "check",
            "/etc/cfy-init/config.yaml",
        ],
        Duration::from_secs(60),
    );
    assert!(check.ok(), "image config: {}", check.both());
}

#[test]
fn legacy_setup_secret_shim_links_the_credentials() {
    let _serial = serial();
    let images = images();
    let secret = secret_dir();
    let out = docker(
        &[
            "run",
            "--rm",
            "-e",
            STANDIN_CONFIG,
            "-v",
            &format!("{}:/secret:ro", secret.path().display()),
            "--entrypoint",
            "/bin/sh",
            &images.manager,
            "-c",
            "/scripts/setup-secret.sh && cat /var/run/secrets/kubernetes.io/serviceaccount/token",
        ],
        Duration::from_secs(60),
    );
    assert!(out.ok(), "setup-secret.sh in the image: {}", out.both());
    assert_eq!(out.stdout.trim(), "test-token-not-a-secret");
}

#[test]
fn recover_sidecar_image_runs_cfy_recover_unprivileged() {
    let _serial = serial();
    let images = images();
    let out = docker(
        &["run", "--rm", &images.sidecar, "--version"],
        Duration::from_secs(60),
    );
    assert!(
        out.ok() && out.stdout.contains("cfy-recover"),
        "cfy-recover --version in the sidecar image: {}",
        out.both()
    );
    let uid = docker_ok(
        &["run", "--rm", "--entrypoint", "id", &images.sidecar, "-u"],
        Duration::from_secs(60),
    );
    assert_eq!(uid, "65532", "the sidecar runs as root");
}
