//! Against the real OpenStack of scripts/openstack.sh (two fake compute hosts), the failures
//! the simulator only imitates: the real `cfy-recover watch` healing a manager whose compute
//! host went down, the same watcher cut off from the cloud (its own network namespace, its
//! routes dropped by the test) never acting, `recover` with the compute service forced
//! down, a server soft-deleted by a cloud with `reclaim_instance_interval`, and a Keystone
//! whose tokens live 30 s. Every end state is checked with the real `openstack` CLI.

mod openstack;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openstack::netns::Netns;
use openstack::*;

/// One metric's value from the watcher's metrics file (0 when absent).
fn metric(file: &Path, name: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn decisions(kind: &str) -> String {
    format!("cfy_recover_watch_decisions_total{{decision=\"{kind}\"}}")
}

/// Until the watcher's log says its recovery finished or stopped; on a timeout the panic
/// carries the log (the test's directory is gone by the time anyone looks).
fn wait_for_recovery(log: &Path) {
    let done = || {
        let text = read(log);
        (text.contains("recovery finished") || text.contains("recovery stopped")).then_some(())
    };
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        until(
            "the watcher's recovery to finish",
            Duration::from_secs(180),
            done,
        )
    }));
    if waited.is_err() {
        panic!(
            "the watcher's recovery did not finish in 180 s; its log:\n{}",
            read(log)
        );
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The watcher process is killed (by its own pid) even when an assertion fails.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cfy-recover watch` with 1 s intervals, 3 failures, a 1 h cooldown, as `cloud`.
/// Seeing a compute host down takes `host_status`: the project's admin (Nova's default
/// policy hides it from members).
/// `http`: cfy-recover's API-call options (timeout, retries).
fn watch_cmd(d: &Deployed, inv: &Path, metrics: &Path, cloud: &str, http: &[&str]) -> Command {
    let token = d.token_file.display().to_string();
    let mut args = http.to_vec();
    args.extend([
        "watch",
        "--inventory",
        inv.to_str().unwrap(),
        "--interval",
        "1s",
        "--failures",
        "3",
        "--cooldown",
        "1h",
        "--probe-timeout",
        "1s",
        "--manager-address",
        "fixed",
        "--manager-token-file",
        &token,
        "--ready-timeout",
        "120s",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    let mut c = d.cmd(&args);
    c.env("OS_CLOUD", cloud).stdout(Stdio::null());
    c
}

fn step<'a>(j: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap()
}

fn servers_named(d: &Deployed) -> Vec<String> {
    os().member(&["server", "list", "--name", &format!("^{}$", d.name)])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ID"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn watcher_heals_a_manager_whose_compute_host_is_down_exactly_once() {
    let d = Deployed::new("wheal");
    d.write_through_server("data/heal.txt", "written before the host died\n");
    let inv = d.save_inventory();
    // Forcing a compute service down is cloud-wide.
    let g = exclusive();
    let host = os().server_host(&d.server_id);
    d.guests.fail_server(&d.server_id);
    let _down = ComputeDown::new(&g, &host);
    let metrics = d.dir.path().join("watch.prom");
    let log = d.dir.path().join("watch.log");
    let t = Instant::now();
    let _w = Watcher(
        watch_cmd(&d, &inv, &metrics, "cfy-demo-admin", &[])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_recovery(&log);
    let healed_in = t.elapsed();
    assert!(read(&log).contains("recovery finished"), "{}", read(&log));
    // After it: the new manager answers; the watcher says so, and does not act again.
    let up = metric(&metrics, &decisions("manager_up"));
    until(
        "3 manager_up decisions after the recovery",
        Duration::from_secs(60),
        || (metric(&metrics, &decisions("manager_up")) >= up + 3).then_some(()),
    );
    assert_eq!(metric(&metrics, "cfy_recover_watch_recoveries_total"), 1);
    assert_eq!(metric(&metrics, &decisions("recover")), 1);
    assert_eq!(
        metric(&metrics, "cfy_recover_watch_recovery_failures_total"),
        0
    );
    drop(_w);
    let text = read(&log);
    let why = text
        .lines()
        .find(|l| l.contains(": recovering"))
        .unwrap_or_else(|| panic!("no recover decision logged:\n{text}"));
    assert!(
        why.contains("on a compute host that is DOWN") && why.contains("recovering"),
        "the reason is named: {why}"
    );
    eprintln!("--- watcher: {why}");
    let new_id = d.assert_recovered();
    assert_ne!(os().server_host(&new_id), host, "rebuilt on another host");
    assert_eq!(
        servers_named(&d),
        vec![new_id.clone()],
        "exactly one server"
    );
    d.wait_manager_ready();
    assert_eq!(d.guests.running_server().as_deref(), Some(new_id.as_str()));
    assert_eq!(
        d.served("data/heal.txt").as_deref(),
        Some("written before the host died\n"),
        "the new guest serves the old one's data"
    );
    let j = d.journal();
    assert_eq!(
        j["old_server"]["host_status"], "DOWN",
        "the journal records why: {j:#}"
    );
    eprintln!(
        "bench watch-heal  detection+recovery {:.1}s",
        healed_in.as_secs_f64()
    );
    d.print_benchmark("watch-heal");
}

/// The real endpoints of the catalog (all on 127.0.0.1) and the manager's hooks port.
fn cloud_ports() -> Vec<u16> {
    vec![5000, 8774, 9696, 8776]
}

fn lo(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn watcher_cut_off_from_the_cloud_never_acts_then_heals_once_the_route_is_back() {
    let _g = shared();
    let d = Deployed::new("wpart");
    d.write_through_server("data/part.txt", "before the partition\n");
    let inv = d.save_inventory();
    let metrics = d.dir.path().join("watch.prom");
    let log = d.dir.path().join("watch.log");
    // The watcher in a network namespace of its own: Keystone, Nova, Neutron, Cinder and
    // the manager's hooks port reachable only through the test's forwarders.
    // Short calls: a dropped route costs a timeout per attempt.
    let http = [
        "--http-timeout",
        "2s",
        "--retries",
        "2",
        "--backoff",
        "200ms",
    ];
    let cmd = watch_cmd(&d, &inv, &metrics, "cfy-demo-admin", &http);
    let mut ns = Netns::spawn(&cmd, Stdio::from(std::fs::File::create(&log).unwrap()));
    for p in cloud_ports() {
        ns.forward(lo(p), lo(p));
    }
    let manager: SocketAddr = format!("{}:{HOOKS_PORT}", d.ip).parse().unwrap();
    ns.forward(manager, manager);
    ns.release();
    // Through the forwarders it sees the manager up.
    until("manager_up decisions", Duration::from_secs(60), || {
        (metric(&metrics, &decisions("manager_up")) >= 2).then_some(())
    });
    // The partition: every route out is dropped. Then the manager dies, and the cloud
    // knows it (its server in ERROR): only a watcher that acts blind would rebuild it.
    ns.cut();
    d.guests.fail_server(&d.server_id);
    d.set_server_error();
    let blind = metric(&metrics, &decisions("cloud_unreachable"));
    until(
        "5 cloud_unreachable decisions",
        Duration::from_secs(180),
        || (metric(&metrics, &decisions("cloud_unreachable")) >= blind + 5).then_some(()),
    );
    assert_eq!(metric(&metrics, "cfy_recover_watch_recoveries_total"), 0);
    assert_eq!(metric(&metrics, &decisions("recover")), 0);
    assert_eq!(metric(&metrics, "cfy_recover_watch_cloud_reachable"), 0);
    assert!(
        read(&log).contains("cloud unreachable, not acting"),
        "{}",
        read(&log)
    );
    assert!(
        !d.state_dir.join("journal.json").exists(),
        "no recovery started"
    );
    assert_eq!(
        servers_named(&d),
        vec![d.server_id.clone()],
        "nothing changed"
    );
    let s = os().member(&["server", "show", &d.server_id]);
    assert_eq!(s["status"], "ERROR", "{s:#}");
    // The route is back: the same watcher now sees ERROR and rebuilds, once.
    ns.heal();
    wait_for_recovery(&log);
    assert!(read(&log).contains("recovery finished"), "{}", read(&log));
    assert_eq!(metric(&metrics, "cfy_recover_watch_recoveries_total"), 1);
    drop(ns);
    let new_id = d.assert_recovered();
    assert_eq!(servers_named(&d), vec![new_id]);
    d.wait_manager_ready();
    assert_eq!(
        d.served("data/part.txt").as_deref(),
        Some("before the partition\n")
    );
    d.print_benchmark("watch-partition");
}

#[test]
fn recover_with_the_compute_service_forced_down_rebuilds_on_another_host() {
    let d = Deployed::new("hostdown");
    d.write_through_server("data/host.txt", "on the host that died\n");
    let g = exclusive();
    let host = os().server_host(&d.server_id);
    d.guests.fail_server(&d.server_id);
    let _down = ComputeDown::new(&g, &host);
    // As the project's admin: cfy-recover sees the host DOWN (host_status).
    let args = d.recover_args(&[]);
    let out = d
        .cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("OS_CLOUD", "cfy-demo-admin")
        .output()
        .unwrap();
    eprintln!(
        "--- cfy-recover recover: {:?}\n{}",
        out.status,
        stderr(&out)
    );
    assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
    let new_id = d.assert_recovered();
    assert_ne!(os().server_host(&new_id), host, "rebuilt on another host");
    let j = d.journal();
    assert_eq!(j["old_server"]["host_status"], "DOWN", "{j:#}");
    for s in ["detach-volumes", "detach-ports"] {
        assert_eq!(step(&j, s)["state"], "skipped", "{s}: {j:#}");
        assert!(
            step(&j, s)["note"].as_str().unwrap_or("").contains("DOWN"),
            "{s}: {j:#}"
        );
    }
    d.wait_manager_ready();
    assert_eq!(
        d.served("data/host.txt").as_deref(),
        Some("on the host that died\n")
    );
    d.print_benchmark("host-down");
}

/// A service of the test's own beside the cloud's (a second nova-api, a second Keystone):
/// TERM to its pid on drop (its workers follow it), then KILL to its process group.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(mut cmd: Command, log: PathBuf) -> Daemon {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
        let child = cmd.spawn().expect("start the daemon");
        Daemon { child, log }
    }

    fn wait_http(&mut self, url: &str) {
        until(url, Duration::from_secs(120), || {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("{url}: the daemon exited ({st}):\n{}", self.tail());
            }
            http_get(url).map(|_| ())
        });
    }

    fn tail(&self) -> String {
        let text = read(&self.log.with_extension("err"));
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The cloud's state directory (configs with passwords: root only).
fn os_dir() -> PathBuf {
    os().logs.parent().unwrap().to_owned()
}

/// A private copy of a config, `edit`ed (it holds passwords: mode 0600).
fn private_copy(src: &Path, dst: &Path, edit: impl Fn(String) -> String) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = edit(std::fs::read_to_string(src).unwrap());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The member's token (for a call the CLI cannot aim at a second endpoint).
fn member_token() -> String {
    os().cli("cfy-member", &["token", "issue", "-f", "value", "-c", "id"])
        .trim()
        .to_owned()
}

fn rest(method: &str, url: &str, token: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .request(method.parse().unwrap(), url)
            .header("X-Auth-Token", token)
            .header("OpenStack-API-Version", "compute 2.79")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

/// Port of the test's soft-deleting nova-api.
const SOFT_NOVA_PORT: u16 = 18774;

#[test]
fn a_soft_deleted_server_is_force_deleted_and_rebuilt_with_its_port_and_volume() {
    let _g = shared();
    let dir = tempfile::tempdir().unwrap();
    // A nova-api of the test's own on the same cells and RPC with `reclaim_instance_interval`
    // set: a DELETE through it only soft-deletes (SOFT_DELETED keeps the port bound and the
    // volume attached). The cloud's own nova-api (and nova-compute, which would reclaim)
    // keep 0, so the other tests' deletes stay real.
    let conf = dir.path().join("nova-soft.conf");
    private_copy(&os_dir().join("etc/nova.conf"), &conf, |t| {
        t.replacen(
            "[DEFAULT]\n",
            &format!(
                "[DEFAULT]\nreclaim_instance_interval = 3600\n# test-owned\nosapi_compute_listen_port = {SOFT_NOVA_PORT}\n"
            ),
            1,
        )
        .replace("osapi_compute_listen_port = 8774\n", "")
    });
    let mut api = Command::new("nova-api");
    api.arg("--config-file").arg(&conf);
    let mut soft_api = Daemon::start(api, dir.path().join("nova-api-soft.log"));
    soft_api.wait_http(&format!("http://127.0.0.1:{SOFT_NOVA_PORT}/"));

    let d = Deployed::new("soft");
    d.write_through_server("data/soft.txt", "before the soft delete\n");
    let inv = d.save_inventory();
    // Deleted by hand on a cloud that soft-deletes.
    let url = format!(
        "http://127.0.0.1:{SOFT_NOVA_PORT}/v2.1/servers/{}",
        d.server_id
    );
    assert_eq!(rest("DELETE", &url, &member_token()), 204);
    until("SOFT_DELETED", Duration::from_secs(60), || {
        let s = os().member(&["server", "show", &d.server_id]);
        (s["status"] == "SOFT_DELETED").then_some(())
    });
    until(
        "the guest to stop with its server",
        Duration::from_secs(30),
        || d.guests.running_server().is_none().then_some(()),
    );
    let port = os().member(&["port", "show", &d.port_id]);
    assert_eq!(port["device_id"], d.server_id.as_str(), "still bound");
    let vol = os().member(&["volume", "show", &d.volume_id]);
    assert_eq!(vol["status"], "in-use", "still attached: {vol:#}");

    // Nova's list leaves SOFT_DELETED servers out: by name it is gone.
    let out = d.recover(&[]);
    assert_eq!(exit_code(&out), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--inventory"), "{}", stderr(&out));
    // cfy-recover on that same soft-deleting cloud: in a network namespace where Nova's
    // endpoint of the catalog (127.0.0.1:8774) leads to the soft-deleting nova-api, so its
    // own DELETE would only soft-delete too.
    let args = d.recover_args(&["--inventory", inv.to_str().unwrap()]);
    let log = d.dir.path().join("recover.log");
    let cmd = d.cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut ns = Netns::spawn(&cmd, Stdio::from(std::fs::File::create(&log).unwrap()));
    for p in cloud_ports() {
        let to = if p == 8774 { SOFT_NOVA_PORT } else { p };
        ns.forward(lo(p), lo(to));
    }
    let manager: SocketAddr = format!("{}:{HOOKS_PORT}", d.ip).parse().unwrap();
    ns.forward(manager, manager);
    ns.release();
    let status = ns.child.wait().unwrap();
    eprintln!(
        "--- cfy-recover recover --inventory (soft-deleting Nova): {status:?}\n{}",
        read(&log)
    );
    assert_eq!(status.code(), Some(0), "{}", read(&log));
    drop(ns);
    d.assert_recovered();
    let gone = os().cli_raw("cfy-member", &["server", "show", &d.server_id]);
    assert!(
        !gone.status.success(),
        "the soft-deleted server was force-deleted, not left to be restored over the new one"
    );
    let j = d.journal();
    let del = step(&j, "delete-server");
    assert!(
        del["note"].as_str().unwrap_or("").contains("deleted"),
        "{del:#}"
    );
    d.wait_manager_ready();
    assert_eq!(
        d.served("data/soft.txt").as_deref(),
        Some("before the soft delete\n")
    );
    d.print_benchmark("soft-delete");
    drop(soft_api);
}

#[test]
fn a_keystone_token_of_10_seconds_is_renewed_and_the_recovery_finishes() {
    let _g = shared();
    let dir = tempfile::tempdir().unwrap();
    // A Keystone of the test's own on the same database and keys, whose tokens live 10 s
    // (Nova, Neutron and Cinder validate them as any other); only cfy-recover logs in there.
    let conf = dir.path().join("keystone-short.conf");
    private_copy(&os_dir().join("etc/keystone.conf"), &conf, |t| {
        let mut out = String::new();
        for l in t.lines() {
            if l.starts_with("expiration") {
                out.push_str("expiration = 10\n");
            } else {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    });
    let mut ks = Command::new("uwsgi");
    ks.env("OS_KEYSTONE_CONFIG_FILES", &conf).args([
        "--plugin",
        "python3",
        "--http-socket",
        "127.0.0.1:5011",
        "--wsgi-file",
        "/usr/bin/keystone-wsgi-public",
        "--master",
        "--processes",
        "1",
        "--threads",
        "4",
        "--lazy-apps",
        "--die-on-term",
        "--add-header",
        "Connection: close",
    ]);
    let mut keystone = Daemon::start(ks, dir.path().join("keystone-short.log"));
    keystone.wait_http("http://127.0.0.1:5011/v3");
    let clouds = dir.path().join("clouds.yaml");
    private_copy(&os().clouds, &clouds, |t| {
        t.replace("127.0.0.1:5000", "127.0.0.1:5011")
    });

    let d = Deployed::new("token");
    d.write_through_server("data/token.txt", "through short tokens\n");
    let args = d.recover_args(&["--take-snapshot"]);
    let t = Instant::now();
    let out = d
        .cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .output()
        .unwrap();
    let took = t.elapsed();
    let err = stderr(&out);
    eprintln!(
        "--- cfy-recover recover with 10 s tokens: {:?} in {:.1}s\n{err}",
        out.status,
        took.as_secs_f64()
    );
    assert_eq!(exit_code(&out), Some(0), "{err}");
    assert!(
        took > Duration::from_secs(5),
        "the run outlived half a token's life, where it is renewed ({took:?})"
    );
    let renewals = err
        .matches("Keystone token near its expiry: renewing")
        .count();
    assert!(renewals >= 1, "renewed before expiry: {err}");
    // Each token serves the first half of its life (not one login per call).
    let most = took.as_secs_f64() / 5.0 + 2.0;
    assert!(
        renewals as f64 <= most,
        "{renewals} renewals in {took:?}: at most {most:.0} expected"
    );
    d.assert_recovered();
    d.wait_manager_ready();
    assert_eq!(
        d.served("data/token.txt").as_deref(),
        Some("through short tokens\n")
    );
    eprintln!(
        "bench token-10s  renewals {renewals} in {:.1}s",
        took.as_secs_f64()
    );
    d.print_benchmark("token-10s");
    drop(keystone);
}
