//! End-to-end tests of the production images under a real Docker engine: the manager image
//! built from docker/Dockerfile with the static release binaries FROM the stand-in base
//! (Debian's PostgreSQL, RabbitMQ and nginx laid out like the manager), run without
//! --privileged, SYS_ADMIN, seccomp:unconfined, a cgroup mount or a tmpfs on /run, and also
//! with a read-only root file system; the sidecar image (static binaries and CA certificates
//! only). The tests run one at a time (they share the engine and the images).

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

/// The image declares the store and the snapshot directory volumes: a run without -v keeps
/// them on anonymous volumes, not in the container's layer, and the image's state directories
/// are already links into the store (prelinked at build: nothing is copied at start).
#[test]
fn without_v_the_store_and_snapshots_are_anonymous_volumes() {
    let _serial = serial();
    let mut cleanup = Cleanup::default();
    let name = unique("novolume");
    cleanup.container(&name);
    run_manager(&name, None, None);
    wait_ready(&name, READY_LIMIT);
    let mounts = inspect(&name, "{{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}");
    for dest in ["/cfy-persist", "/cfy-persist-snapshots"] {
        assert!(
            mounts
                .split_whitespace()
                .any(|m| m == format!("volume:{dest}")),
            "{dest} is not a volume: {mounts}"
        );
    }
    let log = logs(&name);
    assert!(
        !log.contains("without persistence"),
        "ran without persistence despite the VOLUME:\n{log}"
    );
    assert!(
        !log.contains("copied to -initial"),
        "a container start copied an image directory to -initial:\n{log}"
    );
    let pg_data = sh(&name, "readlink -f /var/lib/pgsql/data");
    assert!(pg_data.starts_with("/cfy-persist/"), "{pg_data}");
    sh(&name, &format!("{PSQL} -c 'select 1'"));
    assert_clean_stop(&name);
}

/// `docker run --read-only` with tmpfs only for what the services write outside the store
/// (docs/docker.md lists them): the manager becomes ready, every service runs, data written
/// through PostgreSQL is in the store, and the stop is clean.
#[test]
fn read_only_root_file_system_runs_with_tmpfs_for_runtime_dirs() {
    let _serial = serial();
    let mut cleanup = Cleanup::default();
    let name = unique("readonly");
    let volume = unique("ro-store");
    cleanup.container(&name);
    cleanup.volume(&volume);
    docker_ok(&["volume", "create", &volume], Duration::from_secs(30));
    // The stand-in's service users (Debian's uids for postgres and rabbitmq).
    let ids = |user: &str| {
        let out = docker_ok(
            &[
                "run",
                "--rm",
                "--entrypoint",
                "sh",
                &images().manager,
                "-c",
                &format!("echo $(id -u {user}),$(id -g {user})"),
            ],
            Duration::from_secs(60),
        );
        let (u, g) = out.split_once(',').unwrap();
        format!("uid={u},gid={g}")
    };
    let (pg, mq) = (ids("postgres"), ids("rabbitmq"));
    let tmpfs = [
        "--read-only".to_string(),
        "--tmpfs".into(),
        "/run".into(),
        "--tmpfs".into(),
        format!("/run/postgresql:{pg},mode=02775"),
        "--tmpfs".into(),
        "/var/log/nginx".into(),
        "--tmpfs".into(),
        format!("/var/log/rabbitmq:{mq},mode=0755"),
        "--tmpfs".into(),
        "/tmp".into(),
    ];
    let extra: Vec<&str> = tmpfs.iter().map(String::as_str).collect();
    let secret = secret_dir();
    run_manager_with(&name, Some(&volume), Some(secret.path()), &extra);
    assert_eq!(inspect(&name, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    wait_ready(&name, READY_LIMIT);
    // nginx is not required for readiness: wait for it to be up (it fails for good, FATAL,
    // when it cannot open its files on the read-only root).
    let deadline = std::time::Instant::now() + READY_LIMIT;
    loop {
        let status = sh(&name, "cfy-init status");
        let up = |svc: &str| {
            status
                .lines()
                .find(|l| l.starts_with(svc))
                .is_some_and(|l| {
                    l.split_whitespace().take(3).collect::<Vec<_>>() == [svc, "RUNNING", "yes"]
                })
        };
        if ["postgresql", "rabbitmq", "nginx"].iter().all(|s| up(s)) {
            break;
        }
        assert!(
            !status.contains("FATAL") && std::time::Instant::now() < deadline,
            "not every service runs on the read-only root:\n{status}\nlog tail:\n{}",
            log_tail(&name, 40)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The root really is read-only, and the credentials link still made it (under /run).
    let out = exec(&name, &["touch", "/etc/cfy-init-probe"]);
    assert!(!out.ok(), "the root file system is writable");
    assert_eq!(
        sh(
            &name,
            "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace"
        ),
        "cfy-test-ns"
    );
    let marker = format!("ro{}", std::process::id());
    sh(
        &name,
        &format!(
            "{PSQL} -c 'create table cfy_test (marker text)' \
             -c \"insert into cfy_test values ('{marker}')\""
        ),
    );
    assert_clean_stop(&name);
    docker_ok(&["start", &name], Duration::from_secs(60));
    wait_ready(&name, READY_LIMIT);
    assert_eq!(row_count(&name, &marker), "1", "row lost across a restart");
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
    // (The image's own copies are at <dir>-initial: the image is prelinked.)
    let legacy_seed = format!(
        "set -e; for d in {STATE_DIRS}; do mkdir -p /cfy-persist$(dirname $d); \
         src=$d; [ -L $d ] && src=$d-initial; cp -rp $src /cfy-persist$d; done; \
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
    // The store and the snapshot directory are volumes.
    assert_eq!(
        cfg("{{json .Config.Volumes}}"),
        r#"{"/cfy-persist":{},"/cfy-persist-snapshots":{}}"#
    );
    // OCI labels: the version of this build, its git revision and where it comes from.
    let label = |k: &str| {
        cfg(&format!(
            "{{{{index .Config.Labels \"org.opencontainers.image.{k}\"}}}}"
        ))
    };
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"));
    let head = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert!(
        label("revision").starts_with(&head),
        "revision label {} is not HEAD {head}",
        label("revision")
    );
    assert!(!label("source").is_empty());
    // The static release binary, not the debug one, and every helper the embedded default
    // runs.
    let release = release_dir();
    let in_image = docker_ok(
        &[
            "run",
            "--rm",
            "--entrypoint",
            "sha256sum",
            &images.manager,
            "/usr/local/bin/cfy-init",
            "/opt/cfy-init/load-resolver-rules.py",
        ],
        Duration::from_secs(60),
    );
    let sha = |p: &std::path::Path| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
    };
    assert!(
        in_image.contains(&sha(&release.join("cfy-init"))),
        "/usr/local/bin/cfy-init is not {}/cfy-init: {in_image}",
        release.display()
    );
    assert!(in_image.contains(&sha(&repo().join("scripts/load-resolver-rules.py"))));
    let default = String::from_utf8(
        std::process::Command::new(env!("CARGO_BIN_EXE_cfy-init"))
            .args(["config", "default"])
            .env_remove("CFY_INIT_CONFIG")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let cfg_default: serde_json::Value = serde_norway::from_str(&default).unwrap();
    for svc in cfg_default["supervise"]["services"].as_array().unwrap() {
        for arg in svc["command"].as_array().unwrap() {
            let arg = arg.as_str().unwrap();
            if arg.starts_with("/opt/cfy-init/") {
                let out = docker(
                    &[
                        "run",
                        "--rm",
                        "--entrypoint",
                        "test",
                        &images.manager,
                        "-r",
                        arg,
                    ],
                    Duration::from_secs(60),
                );
                assert!(
                    out.ok(),
                    "{arg} (service {}) is not in the image",
                    svc["name"]
                );
            }
        }
    }
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
fn recover_sidecar_image_is_static_binaries_and_ca_certificates_only() {
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
    let client = docker(
        &[
            "run",
            "--rm",
            "--entrypoint",
            "/usr/local/bin/cfy-init",
            &images.sidecar,
            "--version",
        ],
        Duration::from_secs(60),
    );
    assert!(
        client.ok(),
        "cfy-init in the sidecar image: {}",
        client.both()
    );
    let user = docker_ok(
        &[
            "image",
            "inspect",
            "-f",
            "{{.Config.User}}",
            &images.sidecar,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(user, "65532:65532", "the sidecar runs as root");
    // Every file of the image: the two binaries and the CA bundle, nothing else.
    let name = unique("sidecar-files");
    let mut cleanup = Cleanup::default();
    cleanup.container(&name);
    docker_ok(
        &["create", "--name", &name, &images.sidecar],
        Duration::from_secs(60),
    );
    let export = run_limited(
        std::process::Command::new("sh")
            .args(["-c", &format!("docker export {name} | tar -t | sort")]),
        Duration::from_secs(120),
    );
    let files: Vec<&str> = export
        .stdout
        .lines()
        .filter(|l| !l.ends_with('/'))
        .filter(|l| {
            // Docker's own: the mount points and files it puts in every container.
            !matches!(
                *l,
                ".dockerenv" | "etc/hostname" | "etc/hosts" | "etc/resolv.conf" | "etc/mtab"
            ) && !l.starts_with("dev/")
                && !l.starts_with("proc")
                && !l.starts_with("sys")
        })
        .collect();
    assert_eq!(
        files,
        [
            "etc/ssl/certs/ca-certificates.crt",
            "usr/local/bin/cfy-init",
            "usr/local/bin/cfy-recover"
        ],
        "sidecar image files"
    );
    let size: u64 = image_size(&images.sidecar);
    assert!(size <= 30 * 1024 * 1024, "sidecar image is {size} bytes");
}

/// The sizes of the images under test, for the log (`cargo test -- --nocapture`).
#[test]
fn image_sizes_are_printed_and_bounded() {
    let images = images();
    let (m, s) = (image_size(&images.manager), image_size(&images.sidecar));
    let base = image_size(&images.base);
    println!(
        "image sizes: manager {} ({:.1} MB; base {:.1} MB, +{:.1} MB), sidecar {} ({:.1} MB)",
        images.manager,
        m as f64 / 1e6,
        base as f64 / 1e6,
        (m.saturating_sub(base)) as f64 / 1e6,
        images.sidecar,
        s as f64 / 1e6
    );
    assert!(s <= 30 * 1024 * 1024);
}
