//! A stateful simulator of the part of OpenStack that cfy-recover uses (Keystone v3 tokens and
//! catalog; Nova servers, actions, volume attachments, interfaces, flavors, key pairs; Neutron
//! ports and floating IPs; Cinder volumes), with time-taking transitions, microversions and
//! fault injection. Its servers are real processes (a "guest" command, cfy-init in the
//! end-to-end tests) listening on their port's fixed IP (a 127.x.y.z loopback address); a
//! volume is a real directory, moved into the server's root as `/cfy-persist` on attach.
//!
//! The simulated VM starts its manager once its data volume is attached, as a VM whose
//! container waits for its data disk mount would.
//!
//! Test support only (`publish = false`): cfy-recover's tests take it as a dev-dependency and
//! the `openstack-sim` binary runs it by hand; cfy-recover itself never links it.

mod api;
pub mod faults;
pub mod guest;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use faults::{FaultKind, FaultRule};
use state::*;

/// Credentials the simulated Keystone accepts.
pub const USERNAME: &str = "admin";
pub const PASSWORD: &str = "sim-password";
pub const PROJECT: &str = "demo";
pub const APP_CRED_ID: &str = "appcred-1";
pub const APP_CRED_SECRET: &str = "sim-app-secret";

/// What a guest process is started with.
#[derive(Debug, Clone)]
pub struct GuestEnv {
    pub server_id: String,
    /// The VM's file system (its `/`); the volume is at `root/cfy-persist`.
    pub root: PathBuf,
    /// The fixed IP of the server's first port.
    pub ip: String,
}

/// Builds the command of a server's guest process.
pub type GuestLauncher = Arc<dyn Fn(&GuestEnv) -> Command + Send + Sync>;

/// Transition times and other knobs.
#[derive(Clone)]
pub struct SimConfig {
    pub build: Duration,
    pub delete: Duration,
    pub attach: Duration,
    pub detach: Duration,
    pub fip: Duration,
    /// Catalog type of block storage (`volumev3`, `block-storage`, ...).
    pub volume_service_type: String,
    pub max_compute: Mv,
    pub max_volume: Mv,
    pub guest: Option<GuestLauncher>,
    /// Answer as to an administrator (default policy shows `host_status`, `user_data` and the
    /// other `OS-EXT-SRV-ATTR:*` fields to admins only).
    pub admin_view: bool,
    /// Nova's `reclaim_instance_interval` is set: DELETE soft-deletes.
    pub soft_delete: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            build: Duration::from_millis(300),
            delete: Duration::from_millis(300),
            attach: Duration::from_millis(200),
            detach: Duration::from_millis(200),
            fip: Duration::from_millis(100),
            volume_service_type: "volumev3".into(),
            max_compute: Mv(2, 96),
            max_volume: Mv(3, 70),
            guest: None,
            admin_view: true,
            soft_delete: false,
        }
    }
}

/// State shared by the handlers, the transitions and the test driving the simulator.
pub struct Shared {
    pub state: Mutex<State>,
    pub faults: Mutex<Vec<FaultRule>>,
    pub config: Mutex<SimConfig>,
    pub guests: Mutex<BTreeMap<String, Child>>,
    pub dir: PathBuf,
    pub base_url: String,
    /// First three octets of the fixed IPs (`127.a.b`).
    pub net_prefix: String,
}

/// A running simulator; stops (and kills its guests) when dropped.
pub struct Sim {
    pub shared: Arc<Shared>,
    pub url: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Sim {
    /// Start on a free loopback port, keeping state under `dir`.
    pub fn start(dir: &Path, config: SimConfig) -> std::io::Result<Sim> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))))?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}");
        std::fs::create_dir_all(dir.join("volumes"))?;
        std::fs::create_dir_all(dir.join("vm"))?;
        let mut st = State::default();
        st.hosts.insert("compute-1".into(), true);
        st.hosts.insert("compute-2".into(), true);
        st.flavors.push(Flavor {
            id: "f-large".into(),
            name: "m1.large".into(),
        });
        st.images.push("img-cfy-5.1.2".into());
        st.keypairs.push("ops".into());
        st.next_ip = 10;
        let shared = Arc::new(Shared {
            state: Mutex::new(st),
            faults: Mutex::new(Vec::new()),
            config: Mutex::new(config),
            guests: Mutex::new(BTreeMap::new()),
            dir: dir.to_path_buf(),
            base_url: url.clone(),
            net_prefix: format!(
                "127.{}.{}",
                rand::random::<u8>() % 150 + 100,
                rand::random::<u8>() % 250 + 1
            ),
        });
        let app = api::router(shared.clone());
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Sim {
            shared,
            url,
            runtime: Some(runtime),
        })
    }

    /// The Keystone URL to put in OS_AUTH_URL.
    pub fn auth_url(&self) -> String {
        format!("{}/identity/v3", self.url)
    }

    /// Environment variables for password auth against this simulator.
    pub fn os_env(&self) -> Vec<(String, String)> {
        [
            ("OS_AUTH_URL", self.auth_url()),
            ("OS_USERNAME", USERNAME.into()),
            ("OS_PASSWORD", PASSWORD.into()),
            ("OS_PROJECT_NAME", PROJECT.into()),
            ("OS_USER_DOMAIN_NAME", "Default".into()),
            ("OS_PROJECT_DOMAIN_NAME", "Default".into()),
            ("OS_INTERFACE", "public".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub fn add_fault(&self, rule: FaultRule) {
        self.shared.faults.lock().unwrap().push(rule);
    }

    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.state.lock().unwrap().seen.clone()
    }

    pub fn set_host_up(&self, host: &str, up: bool) {
        self.shared
            .state
            .lock()
            .unwrap()
            .hosts
            .insert(host.into(), up);
        if !up {
            let ids: Vec<String> = {
                let st = self.shared.state.lock().unwrap();
                st.servers
                    .values()
                    .filter(|s| s.host == host)
                    .map(|s| s.id.clone())
                    .collect()
            };
            for id in ids {
                self.shared.stop_guest(&id);
            }
        }
    }

    /// Put a server in ERROR (its VM stops).
    pub fn set_server_error(&self, id: &str, message: &str) {
        if let Some(s) = self.shared.state.lock().unwrap().servers.get_mut(id) {
            s.status = "ERROR".into();
            s.task_state = None;
            s.fault = Some(message.into());
        }
        self.shared.stop_guest(id);
    }

    pub fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.shared.state.lock().unwrap())
    }

    /// Set up a running manager the way an operator would: a port created in Neutron first
    /// (unless `nova_port`), a volume, a floating IP, the server booted on the port, the
    /// volume attached and the floating IP associated. Returns the server id.
    pub fn seed_manager(&self, name: &str, nova_port: bool) -> Seeded {
        let sh = &self.shared;
        let mut st = sh.state.lock().unwrap();
        let port_id = st.id("port");
        let ip = sh.alloc_ip(&mut st);
        let server_id = st.id("srv");
        let vol_id = st.id("vol");
        let fip_id = st.id("fip");
        let host = "compute-1".to_string();
        let mac = format!("fa:16:3e:00:00:{:02x}", st.seq % 256);
        st.ports.insert(
            port_id.clone(),
            SPort {
                id: port_id.clone(),
                name: if nova_port {
                    String::new()
                } else {
                    format!("{name}-port")
                },
                network_id: NETWORK_ID.into(),
                subnet_id: SUBNET_ID.into(),
                ip: ip.clone(),
                mac,
                device_id: server_id.clone(),
                device_owner: "compute:nova".into(),
                host_id: host.clone(),
                status: "ACTIVE".into(),
                created_at: if nova_port {
                    now_rfc3339()
                } else {
                    rfc3339_ago(600)
                },
                nova_created: nova_port,
                security_groups: vec!["sg-manager".into()],
                description: String::new(),
                revision: 1,
            },
        );
        let home = sh.dir.join("volumes").join(&vol_id);
        let root = sh.vm_root(&st);
        std::fs::create_dir_all(&root).expect("server root");
        std::fs::create_dir_all(&home).expect("volume dir");
        std::fs::rename(&home, root.join("cfy-persist")).expect("attach volume dir");
        st.volumes.insert(
            vol_id.clone(),
            SVolume {
                id: vol_id.clone(),
                name: format!("{name}-data"),
                status: "in-use".into(),
                server: Some(server_id.clone()),
                device: Some("/dev/vdb".into()),
                created_at: rfc3339_ago(600),
                home,
            },
        );
        let fip_addr = format!("203.0.113.{}", st.seq % 200 + 10);
        st.fips.insert(
            fip_id.clone(),
            SFip {
                id: fip_id.clone(),
                address: fip_addr.clone(),
                port_id: Some(port_id.clone()),
                fixed_ip: Some(ip.clone()),
                status: "ACTIVE".into(),
            },
        );
        let created = if nova_port {
            rfc3339_ago(1)
        } else {
            now_rfc3339()
        };
        let mut metadata = BTreeMap::new();
        metadata.insert("role".into(), "cloudify-manager".into());
        st.servers.insert(
            server_id.clone(),
            SServer {
                id: server_id.clone(),
                name: name.into(),
                status: "ACTIVE".into(),
                task_state: None,
                created,
                flavor_id: "f-large".into(),
                image_id: "img-cfy-5.1.2".into(),
                key_name: Some("ops".into()),
                security_groups: vec!["sg-manager".into()],
                metadata,
                user_data: Some("I2Nsb3VkLWNvbmZpZwo=".into()),
                az: "nova".into(),
                tags: vec!["manager".into()],
                host,
                ports: vec![port_id.clone()],
                volumes: vec![vol_id.clone()],
                fault: None,
                root: root.clone(),
            },
        );
        drop(st);
        sh.maybe_start_guest(&server_id);
        Seeded {
            server_id,
            port_id,
            volume_id: vol_id,
            fip_id,
            fip_address: fip_addr,
            ip,
            root,
        }
    }

    /// The one server that exists (panics otherwise; for tests).
    pub fn servers(&self) -> Vec<SServer> {
        self.with_state(|st| st.servers.values().cloned().collect())
    }

    /// Where the volume's directory is right now.
    pub fn volume_dir(&self, id: &str) -> PathBuf {
        self.shared.volume_dir(id)
    }
}

/// The ids of a seeded manager.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub server_id: String,
    pub port_id: String,
    pub volume_id: String,
    pub fip_id: String,
    pub fip_address: String,
    pub ip: String,
    pub root: PathBuf,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let ids: Vec<String> = self.shared.guests.lock().unwrap().keys().cloned().collect();
        for id in ids {
            self.shared.stop_guest(&id);
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Shared {
    /// A short directory per VM (unix socket paths inside it must stay under 108 bytes).
    pub fn vm_root(&self, st: &State) -> PathBuf {
        self.dir.join("vm").join(st.seq.to_string())
    }

    pub fn alloc_ip(&self, st: &mut State) -> String {
        st.next_ip += 1;
        format!("{}.{}", self.net_prefix, st.next_ip)
    }

    pub fn volume_dir(&self, id: &str) -> PathBuf {
        let st = self.state.lock().unwrap();
        let v = &st.volumes[id];
        match &v.server {
            Some(s) if matches!(v.status.as_str(), "in-use" | "detaching") => {
                st.servers[s].root.join("cfy-persist")
            }
            _ => v.home.clone(),
        }
    }

    /// Start the server's guest when it is ACTIVE on a live host with its volume attached.
    pub fn maybe_start_guest(&self, id: &str) {
        let Some(launcher) = self.config.lock().unwrap().guest.clone() else {
            return;
        };
        let env = {
            let st = self.state.lock().unwrap();
            let Some(s) = st.servers.get(id) else { return };
            let has_volume = s.volumes.iter().any(|v| {
                st.volumes
                    .get(v)
                    .map(|v| v.status == "in-use")
                    .unwrap_or(false)
            });
            if s.status != "ACTIVE" || !st.host_up(&s.host) || !has_volume {
                return;
            }
            let ip = s
                .ports
                .first()
                .and_then(|p| st.ports.get(p))
                .map(|p| p.ip.clone())
                .unwrap_or_default();
            GuestEnv {
                server_id: id.into(),
                root: s.root.clone(),
                ip,
            }
        };
        let mut guests = self.guests.lock().unwrap();
        if guests.contains_key(id) {
            return;
        }
        let mut cmd = launcher(&env);
        // Its own process group, so the whole "VM" (the guest and what it started) dies at once.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        match cmd.spawn() {
            Ok(child) => {
                tracing::info!(server = id, pid = child.id(), ip = %env.ip, "guest started");
                guests.insert(id.into(), child);
            }
            Err(e) => tracing::error!(server = id, error = %e, "cannot start guest"),
        }
    }

    /// Kill the server's guest and everything it started (its VM stopped or vanished).
    /// Services may live in their own sessions, so the process tree is walked first.
    pub fn stop_guest(&self, id: &str) {
        if let Some(mut child) = self.guests.lock().unwrap().remove(id) {
            let mut tree = descendants(child.id());
            tree.push(child.id());
            for pid in tree {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait();
            tracing::info!(server = id, "guest stopped");
        }
    }
}

/// Every descendant of `root` (from /proc's parent links).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // The command name may hold spaces: fields resume after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parent_of {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}
