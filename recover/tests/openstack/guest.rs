//! The manager's "VM": Nova's fake driver runs nothing, so the harness plays the guest. A
//! thread watches the cloud (Nova, Neutron and Cinder over REST, every 200 ms): once a server
//! of the deployment is ACTIVE with its volume in-use on it, a real cfy-init starts on the
//! port's fixed IP (a /32 alias on `lo`) with the volume's directory (keyed by the volume id:
//! the fake volume driver gives no block device) moved in as its `/cfy-persist`; when the
//! server stops being ACTIVE, is deleted or loses the volume, that cfy-init and everything it
//! started is killed and the directory moved back, as a VM's disk would be detached.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use openstack_sim::guest::{launcher, GuestSpec};
use openstack_sim::{descendants, GuestEnv};

struct Running {
    server_id: String,
    volume_id: String,
    root: PathBuf,
    child: Child,
}

struct Inner {
    dir: PathBuf,
    name: String,
    running: Mutex<Option<Running>>,
    /// The compute host is "dead": its guest is stopped and none starts there.
    host_dead: AtomicBool,
    /// Servers whose "VM" died (their host failed): no guest runs for them any more.
    failed: Mutex<Vec<String>>,
    aliases: Mutex<Vec<String>>,
    stop: AtomicBool,
    started: Mutex<Vec<String>>,
}

pub struct Guests {
    inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The member's REST view of the cloud (token and endpoints from Keystone's catalog).
struct Rest {
    http: reqwest::Client,
    token: String,
    compute: String,
    network: String,
    volume: String,
}

impl Rest {
    async fn login(clouds: &Path) -> Rest {
        let doc: Value = serde_norway::from_str(&std::fs::read_to_string(clouds).unwrap()).unwrap();
        let a = &doc["clouds"]["cfy-member"]["auth"];
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": a["username"], "domain": {"name": "Default"}, "password": a["password"]}}},
            "scope": {"project": {"name": a["project_name"], "domain": {"name": "Default"}}}}});
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let url = format!("{}/auth/tokens", a["auth_url"].as_str().unwrap());
        let r = http.post(url).json(&body).send().await.unwrap();
        let token = r.headers()["x-subject-token"].to_str().unwrap().to_owned();
        let v: Value = r.json().await.unwrap();
        let ep = |t: &str| {
            v["token"]["catalog"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .and_then(|c| {
                    c["endpoints"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|e| e["interface"] == "public")
                })
                .map(|e| e["url"].as_str().unwrap().trim_end_matches('/').to_owned())
                .unwrap()
        };
        Rest {
            compute: ep("compute"),
            network: format!("{}/v2.0", ep("network")),
            volume: ep("block-storage"),
            http,
            token,
        }
    }

    async fn get(&self, url: String) -> Option<Value> {
        let mut req = self.http.get(&url).header("X-Auth-Token", &self.token);
        if url.starts_with(&self.compute) {
            req = req.header("OpenStack-API-Version", "compute 2.79");
        }
        let r = req.send().await.ok()?;
        if !r.status().is_success() {
            eprintln!("guests: GET {} -> {}", r.url(), r.status());
            return None;
        }
        r.json().await.ok()
    }
}

impl Guests {
    pub fn start(dir: &Path, name: &str, clouds: &Path) -> Guests {
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            name: name.to_owned(),
            running: Mutex::new(None),
            host_dead: AtomicBool::new(false),
            failed: Mutex::new(Vec::new()),
            aliases: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            started: Mutex::new(Vec::new()),
        });
        let i2 = inner.clone();
        let clouds = clouds.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let rest = Rest::login(&clouds).await;
                while !i2.stop.load(Ordering::SeqCst) {
                    i2.tick(&rest).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        });
        Guests {
            inner,
            thread: Some(thread),
        }
    }

    /// The root of the running guest's file system.
    pub fn running_root(&self) -> Option<PathBuf> {
        self.inner
            .running
            .lock()
            .unwrap()
            .as_ref()
            .map(|r| r.root.clone())
    }

    pub fn running_server(&self) -> Option<String> {
        self.inner
            .running
            .lock()
            .unwrap()
            .as_ref()
            .map(|r| r.server_id.clone())
    }

    /// Servers a guest was started for, in order.
    pub fn started(&self) -> Vec<String> {
        self.inner.started.lock().unwrap().clone()
    }

    /// The compute host died (or came back): its guest is killed and none starts meanwhile.
    pub fn set_host_dead(&self, dead: bool) {
        self.inner.host_dead.store(dead, Ordering::SeqCst);
        if dead {
            self.inner.stop_guest();
        }
    }

    /// The VM of server `sid` died with its host: its guest is killed and none starts for
    /// it again (a rebuilt server, elsewhere, gets one).
    pub fn fail_server(&self, sid: &str) {
        self.inner.failed.lock().unwrap().push(sid.to_owned());
        let running = self.running_server();
        if running.as_deref() == Some(sid) {
            self.inner.stop_guest();
        }
    }

    pub fn stop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.inner.stop_guest();
        for ip in self.inner.aliases.lock().unwrap().drain(..) {
            let _ = Command::new("ip")
                .args(["addr", "del", &format!("{ip}/32"), "dev", "lo"])
                .output();
        }
    }

    pub fn dump_logs(&self) {
        for e in std::fs::read_dir(self.inner.dir.join("vm"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(text) = std::fs::read_to_string(e.path().join("guest.log")) {
                eprintln!("--- {}/guest.log (last 30 lines):", e.path().display());
                let lines: Vec<&str> = text.lines().collect();
                for l in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    /// One look at the cloud: stop a guest whose server is no longer fit, start one for a
    /// server that is.
    async fn tick(&self, rest: &Rest) {
        let url = format!("{}/servers/detail?name=^{}$", rest.compute, self.name);
        let Some(list) = rest.get(url).await else {
            return;
        };
        let servers = list["servers"].as_array().cloned().unwrap_or_default();
        let running = self
            .running
            .lock()
            .unwrap()
            .as_ref()
            .map(|r| (r.server_id.clone(), r.volume_id.clone()));
        if let Some((sid, vid)) = running {
            let fit = match servers.iter().find(|s| s["id"] == sid.as_str()) {
                Some(s) => s["status"] == "ACTIVE" && self.volume_on(rest, &vid, &sid).await,
                None => false,
            };
            let failed = self.failed.lock().unwrap().contains(&sid);
            if !fit || failed || self.host_dead.load(Ordering::SeqCst) {
                self.stop_guest();
            }
            return;
        }
        if self.host_dead.load(Ordering::SeqCst) {
            return;
        }
        for s in servers.iter().filter(|s| s["status"] == "ACTIVE") {
            let sid = s["id"].as_str().unwrap_or_default().to_owned();
            if self.failed.lock().unwrap().contains(&sid) {
                continue;
            }
            let vols = s["os-extended-volumes:volumes_attached"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for v in vols {
                let vid = v["id"].as_str().unwrap_or_default().to_owned();
                if !self.volume_on(rest, &vid, &sid).await {
                    continue;
                }
                let ports = rest
                    .get(format!("{}/ports?device_id={sid}", rest.network))
                    .await;
                let ip = ports
                    .as_ref()
                    .and_then(|p| p["ports"][0]["fixed_ips"][0]["ip_address"].as_str())
                    .map(str::to_owned);
                if let Some(ip) = ip {
                    self.start_guest(&sid, &vid, &ip);
                    return;
                }
            }
        }
    }

    async fn volume_on(&self, rest: &Rest, vid: &str, sid: &str) -> bool {
        let Some(v) = rest.get(format!("{}/volumes/{vid}", rest.volume)).await else {
            return false;
        };
        v["volume"]["status"] == "in-use"
            && v["volume"]["attachments"]
                .as_array()
                .map(|a| a.iter().any(|x| x["server_id"] == sid))
                .unwrap_or(false)
    }

    fn start_guest(&self, sid: &str, vid: &str, ip: &str) {
        {
            let mut aliases = self.aliases.lock().unwrap();
            if !aliases.iter().any(|a| a == ip) {
                let _ = Command::new("ip")
                    .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
                    .output();
                aliases.push(ip.to_owned());
            }
        }
        let root = self.dir.join("vm").join(sid);
        std::fs::create_dir_all(&root).unwrap();
        let home = self.dir.join("volumes").join(vid);
        std::fs::create_dir_all(&home).unwrap();
        std::fs::rename(&home, root.join("cfy-persist")).unwrap();
        let launch = launcher(GuestSpec {
            program: super::cfy_init_binary(),
            args: vec!["run".into()],
            hooks_port: super::HOOKS_PORT,
            web_port: super::WEB_PORT,
            token: super::TOKEN.into(),
        });
        let mut cmd = launch(&GuestEnv {
            server_id: sid.into(),
            root: root.clone(),
            ip: ip.into(),
        });
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("start the guest's cfy-init");
        eprintln!(
            "guests: cfy-init {} started for server {sid} on {ip}, store = volume {vid}",
            child.id()
        );
        self.started.lock().unwrap().push(sid.to_owned());
        *self.running.lock().unwrap() = Some(Running {
            server_id: sid.into(),
            volume_id: vid.into(),
            root,
            child,
        });
    }

    fn stop_guest(&self) {
        let Some(mut r) = self.running.lock().unwrap().take() else {
            return;
        };
        let mut tree = descendants(r.child.id());
        tree.push(r.child.id());
        for pid in tree {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = r.child.wait();
        eprintln!("guests: the guest of server {} stopped", r.server_id);
        let home = self.dir.join("volumes").join(&r.volume_id);
        let _ = std::fs::rename(r.root.join("cfy-persist"), home);
    }
}
