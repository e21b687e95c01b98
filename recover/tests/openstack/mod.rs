//! Test world against the real OpenStack of `scripts/openstack.sh` (Debian 12's Zed packages on
//! loopback; Nova's fake virt driver, Cinder's fake volume driver). The harness brings the
//! control plane up itself (idempotent: seconds when it already runs, ~5 minutes on a fresh
//! machine), deploys a manager (a pre-created port, a volume, a server, a floating IP), plays
//! its VM with a real cfy-init ([`guest`]), and checks every end state with the real
//! `openstack` CLI (python-openstackclient).
#![allow(dead_code)]

pub mod guest;
pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const HOOKS_PORT: u16 = 8090;
pub const WEB_PORT: u16 = 8091;
pub const TOKEN: &str = "e2e-real-hooks-token-9d2e";

/// The control plane, up.
pub struct Os {
    pub clouds: PathBuf,
    pub osc: PathBuf,
    pub logs: PathBuf,
    pub script: PathBuf,
}

static OS: OnceLock<Os> = OnceLock::new();

/// Serialises `up` between test binaries.
pub const UP_LOCK: &str = "/tmp/cfy-openstack-up-o.lock";

/// Tests that change the cloud for everyone (quotas, compute services) take it for writing.
static CLOUD_WIDE: RwLock<()> = RwLock::new(());

/// The same between test binaries (and worktrees): a shared or exclusive `flock`.
pub const WIDE_LOCK: &str = "/tmp/cfy-openstack-wide.lock";

pub enum CloudGuard {
    Shared(
        RwLockReadGuard<'static, ()>,
        nix::fcntl::Flock<std::fs::File>,
    ),
    Exclusive(
        RwLockWriteGuard<'static, ()>,
        nix::fcntl::Flock<std::fs::File>,
    ),
}

fn wide_lock(arg: nix::fcntl::FlockArg) -> nix::fcntl::Flock<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(WIDE_LOCK)
        .unwrap();
    nix::fcntl::Flock::lock(f, arg).unwrap_or_else(|(_, e)| panic!("flock {WIDE_LOCK}: {e}"))
}

pub fn shared() -> CloudGuard {
    let g = CLOUD_WIDE.read().unwrap_or_else(|e| e.into_inner());
    CloudGuard::Shared(g, wide_lock(nix::fcntl::FlockArg::LockShared))
}
pub fn exclusive() -> CloudGuard {
    let g = CLOUD_WIDE.write().unwrap_or_else(|e| e.into_inner());
    CloudGuard::Exclusive(g, wide_lock(nix::fcntl::FlockArg::LockExclusive))
}

/// A compute service forced down (`openstack compute service set --down`, as the cloud
/// admin) until dropped, even on a failed assertion. Cloud-wide: hold [`exclusive`].
pub struct ComputeDown {
    pub host: String,
}

impl ComputeDown {
    pub fn new(_exclusive: &CloudGuard, host: &str) -> ComputeDown {
        assert!(matches!(_exclusive, CloudGuard::Exclusive(..)));
        let down = ComputeDown { host: host.into() };
        os().cli(
            "cfy-admin",
            &["compute", "service", "set", "--down", host, "nova-compute"],
        );
        eprintln!("--- compute service nova-compute on {host} forced down");
        down
    }
}

impl Drop for ComputeDown {
    fn drop(&mut self) {
        let out = os().cli_raw(
            "cfy-admin",
            &[
                "compute",
                "service",
                "set",
                "--up",
                &self.host,
                "nova-compute",
            ],
        );
        eprintln!(
            "--- compute service nova-compute on {} up again: {:?} {}",
            self.host,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Bring the control plane up (once per test binary; serialised between binaries).
pub fn os() -> &'static Os {
    OS.get_or_init(|| {
        let script = repo_root().join("scripts/openstack.sh");
        let t = Instant::now();
        // -o: the daemons started must not inherit the lock (they would hold it forever).
        let out = Command::new("flock")
            .args(["-o", UP_LOCK])
            .arg("bash")
            .arg(&script)
            .args(["up", "compute"])
            .output()
            .expect("run scripts/openstack.sh");
        eprintln!(
            "--- scripts/openstack.sh up compute: {:?} in {:.1}s\n{}",
            out.status,
            t.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "the OpenStack control plane did not come up"
        );
        let text = |args: &[&str]| {
            let o = Command::new("bash")
                .arg(&script)
                .args(args)
                .output()
                .unwrap();
            assert!(o.status.success(), "openstack.sh {args:?}");
            String::from_utf8(o.stdout).unwrap()
        };
        let clouds =
            std::env::temp_dir().join(format!("cfy-os-clouds-{}.yaml", std::process::id()));
        {
            // It holds the test cloud's passwords: readable by root only.
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::remove_file(&clouds);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&clouds)
                .unwrap();
            f.write_all(text(&["env"]).as_bytes()).unwrap();
        }
        Os {
            clouds,
            osc: PathBuf::from(text(&["osc"]).trim()),
            logs: PathBuf::from(text(&["logs"]).trim()),
            script,
        }
    })
}

impl Os {
    /// The real `openstack` CLI as `cloud` (`cfy-member`, `cfy-admin`, `cfy-demo-admin`).
    pub fn cli_raw(&self, cloud: &str, args: &[&str]) -> Output {
        Command::new(&self.osc)
            .env("OS_CLIENT_CONFIG_FILE", &self.clouds)
            .env("OS_CLOUD", cloud)
            .env("OS_COMPUTE_API_VERSION", "2.79")
            .env_remove("OS_AUTH_URL")
            .args(args)
            .output()
            .expect("run openstack")
    }

    pub fn cli(&self, cloud: &str, args: &[&str]) -> String {
        let out = self.cli_raw(cloud, args);
        assert!(
            out.status.success(),
            "openstack {args:?} as {cloud}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, cloud: &str, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-f", "json"]);
        serde_json::from_str(&self.cli(cloud, &a)).unwrap()
    }

    pub fn member(&self, args: &[&str]) -> Value {
        self.json("cfy-member", args)
    }

    pub fn admin(&self, args: &[&str]) -> Value {
        self.json("cfy-demo-admin", args)
    }

    /// The compute host of a server (an admin's view).
    pub fn server_host(&self, id: &str) -> String {
        let s = self.json("cfy-admin", &["server", "show", id]);
        s["OS-EXT-SRV-ATTR:host"]
            .as_str()
            .unwrap_or_else(|| panic!("no host in {s:#}"))
            .to_owned()
    }
}

/// Poll `f` every 250 ms until it returns `Some` (the transition happened), or fail.
pub fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A manager deployed on the real cloud: pre-created port, volume, server, floating IP, and
/// its guest (a cfy-init) answering on the port's fixed IP.
pub struct Deployed {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub port_id: String,
    pub ip: String,
    pub subnet_id: String,
    pub volume_id: String,
    pub server_id: String,
    pub fip_id: String,
    pub fip: String,
    pub state_dir: PathBuf,
    pub token_file: PathBuf,
    pub guests: guest::Guests,
}

impl Deployed {
    /// Nova's view of a failed server: `openstack server set --state error` (as the admin).
    pub fn set_server_error(&self) {
        os().cli(
            "cfy-demo-admin",
            &[
                "server",
                "set",
                "--state",
                "error",
                "--auto-approve",
                &self.server_id,
            ],
        );
    }

    /// `cfy-recover inventory save` of this manager into `inventory.json` in its directory.
    pub fn save_inventory(&self) -> PathBuf {
        let inv = self.dir.path().join("inventory.json");
        let out = self.run(&[
            "inventory",
            "save",
            "--server",
            &self.name,
            "--file",
            inv.to_str().unwrap(),
        ]);
        assert_eq!(exit_code(&out), Some(0), "{}", stderr(&out));
        inv
    }

    /// A manager on a pre-created port (the way cfy-recover keeps the IP).
    pub fn new(label: &str) -> Deployed {
        Self::build(label, false)
    }

    /// A manager booted with `--network`: Nova created its port (and deletes it with it).
    pub fn with_nova_port(label: &str) -> Deployed {
        Self::build(label, true)
    }

    fn build(label: &str, nova_port: bool) -> Deployed {
        let os = os();
        let name = format!("cfy-{label}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let dir = tempfile::Builder::new()
            .prefix("cfr-os-")
            .tempdir()
            .unwrap();
        let vol = os.member(&["volume", "create", "--size", "1", &format!("{name}-vol")]);
        let volume_id = vol["id"].as_str().unwrap().to_owned();
        until("volume available", Duration::from_secs(60), || {
            (os.member(&["volume", "show", &volume_id])["status"] == "available").then_some(())
        });
        let pre = (!nova_port).then(|| {
            let port_name = format!("{name}-port");
            let port = os.member(&["port", "create", "--network", "demo-net", &port_name]);
            // cfy-recover tells a pre-created port from Nova's by time (created before the
            // server, to the second): boot in the next second of the cloud's clock.
            let created = port["created_at"].as_str().unwrap_or_default().to_owned();
            until("the next second", Duration::from_secs(5), || {
                let now =
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
                (now.as_str() > created.as_str()).then_some(())
            });
            port["id"].as_str().unwrap().to_owned()
        });
        let mut boot = vec![
            "server",
            "create",
            "--flavor",
            "m1.tiny",
            "--image",
            "tiny",
            "--tag",
            "manager",
            "--property",
            "role=manager",
            "--wait",
        ];
        match &pre {
            Some(p) => boot.extend(["--port", p.as_str()]),
            None => boot.extend(["--network", "demo-net"]),
        }
        boot.push(&name);
        let server = os.member(&boot);
        let server_id = server["id"].as_str().unwrap().to_owned();
        let port_id = match pre {
            Some(p) => p,
            None => {
                let list = os.member(&["port", "list", "--server", &server_id]);
                list[0]["ID"].as_str().unwrap().to_owned()
            }
        };
        let port = os.member(&["port", "show", &port_id]);
        let fixed = &port["fixed_ips"][0];
        let ip = fixed["ip_address"].as_str().unwrap().to_owned();
        let subnet_id = fixed["subnet_id"].as_str().unwrap().to_owned();
        os.cli(
            "cfy-member",
            &["server", "add", "volume", &server_id, &volume_id],
        );
        until("volume in-use", Duration::from_secs(60), || {
            (os.member(&["volume", "show", &volume_id])["status"] == "in-use").then_some(())
        });
        let f = os.member(&["floating", "ip", "create", "public"]);
        let fip_id = f["id"].as_str().unwrap().to_owned();
        let fip = f["floating_ip_address"].as_str().unwrap().to_owned();
        os.cli(
            "cfy-member",
            &["floating", "ip", "set", "--port", &port_id, &fip_id],
        );
        let token_file = dir.path().join("hooks.token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let guests = guest::Guests::start(dir.path(), &name, &os.clouds);
        let d = Deployed {
            state_dir: dir.path().join("state"),
            dir,
            name,
            port_id,
            ip,
            subnet_id,
            volume_id,
            server_id,
            fip_id,
            fip,
            token_file,
            guests,
        };
        d.wait_manager_ready();
        d
    }

    /// cfy-recover as the project's member, with this world's state dir and short waits.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cfy-recover"));
        for k in [
            "OS_AUTH_URL",
            "OS_USERNAME",
            "OS_PASSWORD",
            "OS_PROJECT_NAME",
            "CFY_RECOVER_CRASH_AT",
        ] {
            c.env_remove(k);
        }
        c.env("OS_CLIENT_CONFIG_FILE", &os().clouds)
            .env("OS_CLOUD", "cfy-member")
            .env("HOME", self.dir.path())
            .env("CFY_RECOVER_STATE_DIR", &self.state_dir)
            .current_dir(self.dir.path())
            .args([
                "--poll",
                "250ms",
                "--wait-timeout",
                "120s",
                "--detach-timeout",
                "30s",
            ])
            .args(args);
        c
    }

    pub fn recover_args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "recover",
            "--server",
            &self.name,
            "--yes",
            "--manager-address",
            "fixed",
            "--ready-timeout",
            "120s",
            "--manager-token-file",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(self.token_file.display().to_string());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().unwrap();
        eprintln!(
            "--- cfy-recover {args:?}: {:?}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn recover(&self, extra: &[&str]) -> Output {
        let args = self.recover_args(extra);
        self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    pub fn journal(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.state_dir.join("journal.json")).unwrap())
            .unwrap()
    }

    pub fn wait_manager_ready(&self) {
        let url = format!("http://{}:{HOOKS_PORT}/readyz", self.ip);
        until("the manager ready", Duration::from_secs(90), || {
            matches!(http_get(&url), Some((200, _))).then_some(())
        });
    }

    pub fn served(&self, rel: &str) -> Option<String> {
        match http_get(&format!("http://{}:{WEB_PORT}/{rel}", self.ip)) {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }

    /// Write a file through the running guest's `/opt/manager` (linked into its store).
    pub fn write_through_server(&self, rel: &str, content: &str) {
        let root = self.guests.running_root().expect("a guest runs");
        let p = root.join("opt/manager/resources").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }

    /// The end state, checked with the real CLI: one server named like the old one, ACTIVE
    /// and new; the same port (same fixed IP) on it; the same volume in-use on it; the
    /// floating IP on the port. Returns the new server's id.
    pub fn assert_recovered(&self) -> String {
        let os = os();
        let list = os.member(&[
            "server",
            "list",
            "--name",
            &format!("^{}$", self.name),
            "--long",
        ]);
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 1, "exactly one server: {list:#?}");
        let id = list[0]["ID"].as_str().unwrap().to_owned();
        assert_ne!(id, self.server_id, "a new server");
        let s = os.member(&["server", "show", &id]);
        assert_eq!(s["status"], "ACTIVE", "{s:#}");
        let port = os.member(&["port", "show", &self.port_id]);
        assert_eq!(
            port["device_id"],
            id.as_str(),
            "the same port on the new server"
        );
        assert_eq!(
            port["fixed_ips"][0]["ip_address"],
            self.ip.as_str(),
            "same fixed IP"
        );
        let vol = os.member(&["volume", "show", &self.volume_id]);
        assert_eq!(vol["status"], "in-use", "{vol:#}");
        assert_eq!(
            vol["attachments"][0]["server_id"],
            id.as_str(),
            "the same volume on it"
        );
        let fip = os.member(&["floating", "ip", "show", &self.fip_id]);
        assert_eq!(
            fip["port_id"],
            self.port_id.as_str(),
            "the floating IP on the port"
        );
        let j = self.journal();
        assert_eq!(j["finished"], true, "{j:#}");
        assert_eq!(j["new_server_id"], id.as_str());
        id
    }

    /// Every step's duration against the real cloud and cfy-recover's own overhead in it.
    pub fn print_benchmark(&self, scenario: &str) {
        let j = self.journal();
        for s in j["steps"].as_array().unwrap() {
            eprintln!(
                "bench {scenario:<14} {:<24} {:<8} wall {:>7.3}s  cpu {:>6.3}s  slack {:>6.3}s",
                s["step"].as_str().unwrap_or("?"),
                s["state"].as_str().unwrap_or("?"),
                s["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                s["cpu_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                s["slack_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            );
        }
    }
}

impl Drop for Deployed {
    /// Stop the guests, delete what the test made (best effort); on failure say where the
    /// control plane's logs are (they are kept).
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- OpenStack logs kept in {}", os().logs.display());
            self.guests.dump_logs();
        }
        self.guests.stop();
        let os = os();
        let ids = os.cli_raw(
            "cfy-member",
            &[
                "server",
                "list",
                "--name",
                &format!("^{}$", self.name),
                "-f",
                "value",
                "-c",
                "ID",
            ],
        );
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            os.cli_raw("cfy-member", &["server", "delete", "--wait", id]);
        }
        os.cli_raw("cfy-member", &["floating", "ip", "delete", &self.fip_id]);
        os.cli_raw("cfy-member", &["port", "delete", &self.port_id]);
        os.cli_raw("cfy-member", &["volume", "delete", &self.volume_id]);
    }
}

/// A tiny blocking GET (HTTP/1.0).
pub fn http_get(url: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let addr: std::net::SocketAddr = host.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    Some((code, body))
}

pub fn exit_code(out: &Output) -> Option<i32> {
    out.status.code()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `target/debug/cfy-init` of this workspace.
pub fn cfy_init_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("debug/cfy-init");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}
