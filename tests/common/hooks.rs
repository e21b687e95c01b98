//! Helpers for the hooks and snapshot tests: a re-rooted config in a temp dir, an HTTP/1.1
//! client over the unix socket or TCP, and tree fingerprints to prove "unchanged".
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use cfy_init::config::{Config, Context, Root};
use http_body_util::BodyExt;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub ctx: Context,
    pub config_file: PathBuf,
    pub token: String,
}

impl Env {
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    /// The store as the test sees it (re-rooted).
    pub fn store(&self) -> PathBuf {
        self.root().join("cfy-persist")
    }
    pub fn archives(&self) -> PathBuf {
        self.root().join("snapshots")
    }
}

/// A two-worker runtime for driving the snapshot engine from a plain `#[test]`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A temp root with a config: control socket, TCP on a free loopback port with a token,
/// store and archive dir. `extra` is YAML merged as further top-level keys of `snapshot:`.
pub fn env(snapshot_extra: &str) -> Env {
    env_with(snapshot_extra, "")
}

/// As [`env`], with more top-level YAML (e.g. a `supervise:` section) appended;
/// `{store}` in it is replaced by the store's path.
pub fn env_with(snapshot_extra: &str, more_yaml: &str) -> Env {
    let dir = tempfile::Builder::new()
        .prefix("cfy-hooks-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    let token = format!("tok-{:016x}", rand::random::<u64>());
    std::fs::create_dir_all(root.join("etc/cfy-init")).unwrap();
    std::fs::write(root.join("etc/cfy-init/token"), format!("{token}\n")).unwrap();
    std::fs::create_dir_all(root.join("cfy-persist")).unwrap();
    let store_path = root.join("cfy-persist").display().to_string();
    let snapshot_extra = snapshot_extra.replace("{store}", &store_path);
    let mut snap = String::from("snapshot:\n  archive_dir: /snapshots\n");
    if !snapshot_extra.contains("quiesce:") {
        snap.push_str("  quiesce:\n    services: []\n");
    }
    if !snapshot_extra.contains("ready_timeout:") {
        snap.push_str("  ready_timeout: 20s\n");
    }
    // `{store}` in the extra YAML stands for the (re-rooted) store path.
    let more_yaml = more_yaml.replace("{store}", &store_path);
    for line in snapshot_extra.lines() {
        snap.push_str("  ");
        snap.push_str(line);
        snap.push('\n');
    }
    let yaml = format!(
        "hooks:\n  socket: /run/cfy-init/control.sock\n  listen: 127.0.0.1:0\n  token_file: /etc/cfy-init/token\n{snap}{more_yaml}"
    );
    let config_file = root.join("etc/cfy-init/config.yaml");
    std::fs::write(&config_file, yaml).unwrap();
    let r = Root::new(root);
    let config = Config::load(Some(&config_file), &r).unwrap();
    Env {
        ctx: Context {
            config,
            root: r,
            config_path: Some(config_file.clone()),
        },
        dir,
        config_file,
        token,
    }
}

#[derive(Clone, Debug)]
pub enum To {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One request on a fresh connection.
pub async fn request(
    to: &To,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Resp {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body).unwrap();
    let resp = match to {
        To::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p).await.unwrap();
            send(TokioIo::new(s), req).await
        }
        To::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a).await.unwrap();
            send(TokioIo::new(s), req).await
        }
    };
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn send<I>(io: I, req: Request<Body>) -> hyper::Response<hyper::body::Incoming>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    sender.send_request(req).await.unwrap()
}

pub async fn get(to: &To, path: &str, token: Option<&str>) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    request(to, Method::GET, path, &headers, Body::empty()).await
}

/// Everything about a tree that a restore must reproduce: type, mode, owner, size, mtime,
/// content hash, link target; keyed by relative path. Reserved names are skipped.
pub fn fingerprint(dir: &Path) -> BTreeMap<String, String> {
    use sha2::Digest;
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if rel.starts_with(".cfy-snapshot-") {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                "dir".to_string()
            } else {
                let h = sha2::Sha256::digest(std::fs::read(&p).unwrap());
                format!("file {} {}", m.len(), hex::encode(h))
            };
            let mtime = if m.is_dir() { 0 } else { m.mtime() };
            out.insert(
                rel,
                format!(
                    "{what} mode={:o} {}:{} mtime={mtime}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid()
                ),
            );
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// A small store with nested dirs, odd modes and owners, a relative symlink and an empty file.
pub fn populate(store: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(store.join("var/lib/data/sub")).unwrap();
    std::fs::write(store.join("var/lib/data/a.txt"), "alpha\n").unwrap();
    std::fs::write(store.join("var/lib/data/sub/empty"), "").unwrap();
    let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(store.join("var/lib/data/big.bin"), big).unwrap();
    std::fs::set_permissions(
        store.join("var/lib/data/a.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::chown(store.join("var/lib/data/a.txt"), Some(1234), Some(4321)).unwrap();
    std::os::unix::fs::symlink("data/a.txt", store.join("var/lib/link")).unwrap();
    std::fs::create_dir_all(store.join("etc/cloudify")).unwrap();
    std::fs::write(store.join("etc/cloudify/config.yaml"), "manager: {}\n").unwrap();
}

/// A `cfy-init run` process on a test root; killed (SIGTERM, then waited for) on drop.
pub struct Init {
    pub child: std::process::Child,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub config: PathBuf,
}

impl Init {
    pub fn start(e: &Env) -> Init {
        let log = std::fs::File::create(e.root().join("init.log")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cfy-init"))
            .arg("--root")
            .arg(e.root())
            .arg("--config")
            .arg(&e.config_file)
            .arg("run")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let init = Init {
            child,
            socket: e.root().join("run/cfy-init/control.sock"),
            root: e.root().to_path_buf(),
            config: e.config_file.clone(),
        };
        poll(Duration::from_secs(30), "control socket", || {
            init.socket.exists()
        });
        init
    }

    pub fn to(&self) -> To {
        To::Unix(self.socket.clone())
    }

    /// `cfy-init <args>` against this init (the client reads the same config).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_cfy-init"))
            .arg("--root")
            .arg(&self.root)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("init.log")).unwrap_or_default()
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- cfy-init log ---\n{}", self.log());
        }
    }
}

use std::time::Duration;

/// Poll `cond` every 50 ms until it holds; panic naming `what` after `limit`.
pub fn poll(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Async poll of the API until `/readyz` answers 200.
pub async fn wait_ready(to: &To, limit: Duration) {
    let end = std::time::Instant::now() + limit;
    loop {
        if get(to, "/readyz", None).await.status == StatusCode::OK {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "not ready within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
