//! Test helpers for the supervisord interface: cfy-init as PID 1 in a PID namespace with a
//! temp root, a real `supervisord` on the same program set, `supervisorctl` against
//! either, and output normalisation for comparing the two.
#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for anything we poll for.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Poll `cond` every 50 ms until it holds or `PATIENCE` runs out.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn socket_answers(sock: &Path) -> bool {
    UnixStream::connect(sock).is_ok()
}

/// The `[supervisord]`/`[unix_http_server]` head shared by both sides; `socket` is the
/// path written in the file (cfy-init re-roots it), `dir` holds supervisord's own files.
pub fn main_conf(socket: &str, dir: &Path, programs: &str) -> String {
    format!(
        "[supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
         childlogdir={d}\nnodaemon=true\n\n\
         [unix_http_server]\nfile={socket}\nchmod=0770\n\n\
         [supervisorctl]\nserverurl=unix://{socket}\n\n\
         [rpcinterface:supervisor]\n\
         supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         {programs}\n\
         [include]\nfiles=supervisord.d/*.conf\n",
        d = dir.display()
    )
}

/// cfy-init running as PID 1 of a new PID namespace, rooted at a temp dir whose
/// `/etc/supervisord.conf` and `/etc/supervisord.d/` the test writes.
pub struct CfyInit {
    pub root: tempfile::TempDir,
    pub sock: PathBuf,
    child: Option<Child>,
}

impl CfyInit {
    /// A root with `etc/supervisord.conf` (socket `/tmp/supervisor.sock`) holding
    /// `programs`, and `include_files` under `etc/supervisord.d/`. Not started yet.
    pub fn prepare(programs: &str, include_files: &[(&str, &str)]) -> CfyInit {
        let root = tempfile::Builder::new()
            .prefix("svd-cfy")
            .tempdir()
            .unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(etc.join("supervisord.d")).unwrap();
        std::fs::create_dir_all(root.path().join("tmp")).unwrap();
        let state = root.path().join("var/supervisord");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(
            etc.join("supervisord.conf"),
            main_conf(
                "/tmp/supervisor.sock",
                Path::new("/var/supervisord"),
                programs,
            ),
        )
        .unwrap();
        for (name, text) in include_files {
            std::fs::write(etc.join("supervisord.d").join(name), text).unwrap();
        }
        let sock = root.path().join("tmp/supervisor.sock");
        CfyInit {
            root,
            sock,
            child: None,
        }
    }

    pub fn include_dir(&self) -> PathBuf {
        self.root.path().join("etc/supervisord.d")
    }

    /// Start it and wait for the socket to answer. `extra_config`: YAML for `--config`.
    pub fn start(mut self, extra_config: &str) -> CfyInit {
        let cfg = self.root.path().join("cfy-init.yaml");
        std::fs::write(
            &cfg,
            format!("supervisord:\n  enabled: true\n{extra_config}"),
        )
        .unwrap();
        let log = std::fs::File::create(self.root.path().join("cfy-init.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(env!("CARGO_BIN_EXE_cfy-init"))
            .arg("--root")
            .arg(self.root.path())
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .env_remove("CFY_INIT_CONFIG")
            .env_remove("CFY_INIT_LOG")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare runs");
        self.child = Some(child);
        let sock = self.sock.clone();
        let logf = self.root.path().join("cfy-init.log");
        wait_until("cfy-init's supervisord socket", || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "cfy-init exited early ({status}): {}",
                        std::fs::read_to_string(&logf).unwrap_or_default()
                    );
                }
            }
            socket_answers(&sock)
        });
        self
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("cfy-init.log")).unwrap_or_default()
    }

    /// SIGTERM to PID 1 of the namespace, then wait for it to finish.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let unshare = child.id();
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        if let Some(pid1) = children.split_whitespace().next() {
            let _ = Command::new("kill").args(["-TERM", pid1]).status();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for CfyInit {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real supervisord on the same programs, in its own temp dir.
pub struct RealSupervisord {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    child: Option<Child>,
}

impl RealSupervisord {
    pub fn start(programs: &str, include_files: &[(&str, &str)]) -> RealSupervisord {
        let dir = tempfile::Builder::new()
            .prefix("svd-real")
            .tempdir()
            .unwrap();
        let sock = dir.path().join("supervisor.sock");
        std::fs::create_dir_all(dir.path().join("supervisord.d")).unwrap();
        let conf = dir.path().join("supervisord.conf");
        std::fs::write(
            &conf,
            main_conf(&sock.to_string_lossy(), dir.path(), programs),
        )
        .unwrap();
        for (name, text) in include_files {
            std::fs::write(dir.path().join("supervisord.d").join(name), text).unwrap();
        }
        let child = Command::new("supervisord")
            .arg("-n")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("supervisord runs (Debian package `supervisor`)");
        let s = sock.clone();
        wait_until("supervisord's socket", || socket_answers(&s));
        RealSupervisord {
            dir,
            sock,
            child: Some(child),
        }
    }

    pub fn include_dir(&self) -> PathBuf {
        self.dir.path().join("supervisord.d")
    }
}

impl Drop for RealSupervisord {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + PATIENCE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `supervisorctl -s unix://SOCK ARGS...` → (stdout+stderr, exit code).
pub fn ctl(sock: &Path, args: &[&str]) -> (String, i32) {
    let out = Command::new("supervisorctl")
        .arg("-s")
        .arg(format!("unix://{}", sock.display()))
        .args(args)
        .output()
        .expect("supervisorctl runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (text, out.status.code().unwrap_or(-1))
}

/// Every run of digits becomes `N` (pids, uptimes, dates, offsets differ between runs).
pub fn normalise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_digits = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out
}

/// One XML-RPC call without parameters over HTTP/1.0 (the server closes after answering);
/// cheaper than starting a Python client when polling.
pub fn raw_call(sock: &Path, method: &str) -> String {
    use std::io::{Read, Write};
    let body = format!(
        "<?xml version='1.0'?><methodCall><methodName>{method}</methodName><params></params></methodCall>"
    );
    let Ok(mut s) = UnixStream::connect(sock) else {
        return String::new();
    };
    let req = format!(
        "POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut out = String::new();
    if s.write_all(req.as_bytes()).is_ok() {
        let _ = s.read_to_string(&mut out);
    }
    out
}

/// True when no process is in a transient state.
pub fn settled(sock: &Path) -> bool {
    let out = raw_call(sock, "supervisor.getAllProcessInfo");
    out.contains("methodResponse")
        && !["STARTING", "STOPPING", "BACKOFF"]
            .iter()
            .any(|s| out.contains(s))
}

/// Run a Python script with `SOCK` set to a socket path; returns its stdout.
pub fn python(script: &str, sock: &Path) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("SOCK", sock)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Python prelude: an xmlrpc.client ServerProxy over the unix socket in $SOCK, the way
/// supervisor's own transport and Cloudify's code reach it.
pub const PY_PROXY: &str = r#"
import http.client, os, socket, sys, json, time, xmlrpc.client
class UnixConn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__('localhost')
        self.path_ = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path_)
class UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path):
        super().__init__()
        self.path_ = path
    def make_connection(self, host):
        return UnixConn(self.path_)
proxy = xmlrpc.client.ServerProxy('http://localhost/RPC2', transport=UnixTransport(os.environ['SOCK']))
def fault(f, *a):
    try:
        f(*a)
        return None
    except xmlrpc.client.Fault as e:
        return [e.faultCode, e.faultString]
    except xmlrpc.client.ProtocolError as e:
        return ['http', e.errcode]
"#;
