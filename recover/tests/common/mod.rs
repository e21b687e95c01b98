//! Test world for cfy-recover: an OpenStack simulator whose servers run real cfy-init on
//! 127.x.y.z, a seeded manager with a data volume, and helpers to run the cfy-recover binary
//! against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use openstack_sim::{Seeded, Sim, SimConfig};

pub const HOOKS_PORT: u16 = 8090;
pub const WEB_PORT: u16 = 8091;
pub const TOKEN: &str = "e2e-hooks-token-5f1c";

pub struct World {
    pub dir: tempfile::TempDir,
    pub sim: Sim,
    pub seeded: Seeded,
    pub state_dir: PathBuf,
    pub token_file: PathBuf,
}

/// VMs run the workspace's real `cfy-init` binary (built by `scripts/test.sh` before the
/// tests) with the simulator's guest image and config.
pub fn launcher() -> openstack_sim::GuestLauncher {
    openstack_sim::guest::launcher(openstack_sim::guest::GuestSpec {
        program: cfy_init_binary(),
        args: vec!["run".to_string()],
        hooks_port: HOOKS_PORT,
        web_port: WEB_PORT,
        token: TOKEN.into(),
    })
}

/// `target/debug/cfy-init` of this workspace (or of `CARGO_TARGET_DIR`).
pub fn cfy_init_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/cfy-init");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

impl World {
    pub fn new() -> World {
        Self::with(false, SimConfig::default())
    }

    pub fn with(nova_port: bool, mut config: SimConfig) -> World {
        let dir = tempfile::Builder::new().prefix("cfr-").tempdir().unwrap();
        config.guest = Some(launcher());
        let sim = Sim::start(&dir.path().join("sim"), config).unwrap();
        let seeded = sim.seed_manager("cfy-manager", nova_port);
        let token_file = dir.path().join("hooks.token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let state_dir = dir.path().join("state");
        World {
            dir,
            sim,
            seeded,
            state_dir,
            token_file,
        }
    }

    /// cfy-recover with this world's credentials, state dir and fast timings.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cfy-recover"));
        for k in [
            "OS_CLOUD",
            "OS_AUTH_URL",
            "OS_USERNAME",
            "OS_PASSWORD",
            "OS_PROJECT_NAME",
            "OS_PROJECT_ID",
            "OS_APPLICATION_CREDENTIAL_ID",
            "OS_APPLICATION_CREDENTIAL_SECRET",
            "OS_INTERFACE",
            "OS_CLIENT_CONFIG_FILE",
            "CFY_RECOVER_CRASH_AT",
        ] {
            c.env_remove(k);
        }
        c.envs(self.sim.os_env())
            .env("HOME", self.dir.path())
            .env("CFY_RECOVER_STATE_DIR", &self.state_dir)
            .current_dir(self.dir.path());
        c.args([
            "--poll",
            "50ms",
            "--backoff",
            "50ms",
            "--http-timeout",
            "2s",
            "--wait-timeout",
            "30s",
            "--detach-timeout",
            "3s",
        ]);
        c.args(args);
        c
    }

    /// `recover --server cfy-manager --yes` plus `extra`, reaching the manager by fixed IP.
    pub fn recover_args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "recover",
            "--server",
            "cfy-manager",
            "--yes",
            "--manager-address",
            "fixed",
            "--ready-timeout",
            "60s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push("--manager-token-file".into());
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
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&refs)
    }

    pub fn resume(&self) -> Output {
        self.run(&["resume"])
    }

    pub fn journal(&self) -> serde_json::Value {
        let text = std::fs::read(self.state_dir.join("journal.json")).unwrap();
        serde_json::from_slice(&text).unwrap()
    }

    /// Wait until the manager at the seeded fixed IP answers /readyz.
    pub fn wait_manager_ready(&self) {
        let url = format!("http://{}:{HOOKS_PORT}/readyz", self.seeded.ip);
        poll("manager ready", Duration::from_secs(60), || {
            http_get(&url).map(|(code, _)| code == 200).unwrap_or(false)
        });
    }

    /// A file as served by the manager's web service (through the fixed IP).
    pub fn served(&self, rel: &str) -> Option<String> {
        let url = format!("http://{}:{WEB_PORT}/{rel}", self.seeded.ip);
        match http_get(&url) {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }

    /// Write a file "through the old server": into its /opt/manager, which links into the store.
    pub fn write_through_server(&self, rel: &str, content: &str) {
        let root = self.sim.servers()[0].root.clone();
        let p = root.join("opt/manager/resources").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        assert!(
            std::fs::symlink_metadata(root.join("opt/manager"))
                .unwrap()
                .file_type()
                .is_symlink(),
            "/opt/manager is linked into the store"
        );
    }

    /// The end state every recovery must reach: one server, ACTIVE, tagged by the run, on
    /// the same port (same IP), with the volume in-use and the floating IP ACTIVE on it.
    pub fn assert_recovered(&self) -> String {
        let servers = self.sim.servers();
        assert_eq!(servers.len(), 1, "exactly one server: {servers:#?}");
        let s = &servers[0];
        assert_ne!(s.id, self.seeded.server_id, "a new server");
        assert_eq!(s.status, "ACTIVE");
        assert_eq!(s.ports, vec![self.seeded.port_id.clone()]);
        assert!(
            s.tags.iter().any(|t| t.starts_with("cfy-recover-")),
            "{:?}",
            s.tags
        );
        assert!(s.tags.contains(&"manager".to_string()), "old tags kept");
        self.sim.with_state(|st| {
            let p = &st.ports[&self.seeded.port_id];
            assert_eq!(p.device_id, s.id);
            assert_eq!(p.ip, self.seeded.ip, "same private IP");
            let v = &st.volumes[&self.seeded.volume_id];
            assert_eq!(v.status, "in-use");
            assert_eq!(v.server.as_deref(), Some(s.id.as_str()));
            let f = &st.fips[&self.seeded.fip_id];
            // Bound in Neutron; its data plane (ACTIVE) is waited for only when the manager
            // is reached through the floating IP (these tests use the fixed one).
            assert_eq!(f.port_id.as_deref(), Some(self.seeded.port_id.as_str()));
        });
        let j = self.journal();
        assert_eq!(j["finished"], true, "journal finished: {j:#}");
        assert_eq!(j["new_server_id"], s.id.as_str());
        s.id.clone()
    }
}

pub fn poll(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tiny blocking GET (HTTP/1.0) so the tests need no runtime of their own.
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

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

impl Drop for World {
    /// On failure, show what the simulated VMs logged.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let servers = self.dir.path().join("sim/vm");
        for e in std::fs::read_dir(&servers).into_iter().flatten().flatten() {
            let log = e.path().join("guest.log");
            if let Ok(text) = std::fs::read_to_string(&log) {
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- {}:", log.display());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}
