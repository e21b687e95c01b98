//! Test helpers for the supervisor: a sandbox directory readable by service users, cfy-init
//! started as PID 1 in a fresh PID namespace (`unshare --pid --fork --mount-proc`) with
//! JSON logs captured to a file, and real PostgreSQL / RabbitMQ / nginx laid out in the
//! sandbox with unique ports, defined as cfy-init services.
//!
//! Include with `#[path = "common/services.rs"] mod services;`.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[path = "signals.rs"]
mod signals;
use signals::default_signal_dispositions;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_cfy-init");
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Generous upper bound for conditions polled by tests (never a sleep-and-hope).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `f` until it returns Some, or panic with `what` after `limit`.
pub fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// uid and gid of a system user.
pub fn user_ids(name: &str) -> (u32, u32) {
    let u = nix::unistd::User::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("user {name} missing: run scripts/install-deps.sh"));
    (u.uid.as_raw(), u.gid.as_raw())
}

pub fn chown_r(path: &Path, user: &str) {
    let (uid, gid) = user_ids(user);
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A temp directory that service users can traverse, used as `--root`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cfy-sup-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Sandbox { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A sub-directory owned by `user` (mode 0700 when `private`).
    pub fn dir_for(&self, rel: &str, user: &str, private: bool) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(
            &p,
            fs::Permissions::from_mode(if private { 0o700 } else { 0o755 }),
        )
        .unwrap();
        chown_r(&p, user);
        p
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    /// Start `cfy-init --root SANDBOX --config FILE --log-format json run [-- main...]` as
    /// PID 1 of a new PID namespace; logs go to `<sandbox>/<log_name>`.
    pub fn start(&self, config_yaml: &str, main: &[&str], log_name: &str) -> Init {
        self.start_run(config_yaml, &[], main, log_name)
    }

    /// [`Sandbox::start`] with flags of `run` before the `--`.
    pub fn start_run(
        &self,
        config_yaml: &str,
        flags: &[&str],
        main: &[&str],
        log_name: &str,
    ) -> Init {
        self.start_in(true, config_yaml, flags, main, log_name)
    }

    /// [`Sandbox::start`] not as PID 1: cfy-init as a plain child of the test (it makes
    /// itself child subreaper).
    pub fn start_not_pid1(&self, config_yaml: &str, log_name: &str) -> Init {
        let mut init = self.start_in(false, config_yaml, &[], &[], log_name);
        init.init_pid = Some(init.child.id() as i32);
        init
    }

    fn start_in(
        &self,
        pid1: bool,
        config_yaml: &str,
        flags: &[&str],
        main: &[&str],
        log_name: &str,
    ) -> Init {
        let config = self.write(&format!("{log_name}.config.yaml"), config_yaml);
        let log = self.path(log_name);
        let logf = fs::File::create(&log).unwrap();
        let mut cmd = if pid1 {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                .arg(BIN);
            c
        } else {
            Command::new(BIN)
        };
        cmd.arg("--root")
            .arg(self.dir.path())
            .arg("--config")
            .arg(&config)
            .args(["--log-format", "json", "run"])
            .args(flags);
        if !main.is_empty() {
            cmd.arg("--").args(main);
        }
        cmd.env("CFY_INIT_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(logf));
        // Own process group so that test cleanup can kill everything.
        cmd.process_group(0);
        default_signal_dispositions(&mut cmd);
        let child = cmd.spawn().expect("run unshare");
        Init {
            child,
            log,
            init_pid: None,
        }
    }
}

/// A running cfy-init (as PID 1 of its namespace) seen from the test.
pub struct Init {
    pub child: Child,
    pub log: PathBuf,
    init_pid: Option<i32>,
}

impl Drop for Init {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // --kill-child: killing unshare takes the namespace down with it.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Children of a host pid.
pub fn children(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The command line of a host pid, arguments joined by spaces.
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

impl Init {
    /// Host pid of cfy-init (PID 1 inside the namespace).
    pub fn pid(&mut self) -> i32 {
        if let Some(p) = self.init_pid {
            return p;
        }
        let unshare = self.child.id() as i32;
        let p = poll("cfy-init to start", PATIENCE, || {
            children(unshare).first().copied()
        });
        self.init_pid = Some(p);
        p
    }

    /// Every JSON log event so far.
    pub fn events(&self) -> Vec<Value> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The raw log, for failure messages.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Index of every event whose message is `msg` and whose service is `service`.
    pub fn find(&self, msg: &str, service: &str) -> Vec<usize> {
        self.events()
            .iter()
            .enumerate()
            .filter(|(_, e)| event_is(e, msg, service))
            .map(|(i, _)| i)
            .collect()
    }

    /// Wait until the log has at least `n` events `msg` for `service`.
    pub fn wait_event(&mut self, msg: &str, service: &str, n: usize) {
        let start = Instant::now();
        loop {
            if self.find(msg, service).len() >= n {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "cfy-init exited ({st}) before {n}× {msg:?} of {service}; log:\n{}",
                    self.log_text()
                );
            }
            if start.elapsed() > PATIENCE {
                panic!(
                    "timed out waiting for {n}× {msg:?} of {service}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal to cfy-init.
    pub fn signal(&mut self, sig: i32) {
        let pid = self.pid();
        // SAFETY: plain syscall.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill cfy-init");
    }

    /// Wait for the whole namespace to end; cfy-init's exit status as unshare reports it.
    pub fn wait_exit(&mut self) -> ExitStatus {
        poll("cfy-init to exit", PATIENCE, || {
            self.child.try_wait().unwrap()
        })
    }

    /// Host pid of the direct child of cfy-init whose command line contains `needle`.
    pub fn service_pid(&mut self, needle: &str) -> Option<i32> {
        let init = self.pid();
        children(init)
            .into_iter()
            .find(|p| cmdline(*p).contains(needle))
    }

    /// Panic with the log unless `cond`.
    pub fn check(&self, cond: bool, what: &str) {
        assert!(cond, "{what}; log:\n{}", self.log_text());
    }
}

/// Whether a log event has this message and service field.
pub fn event_is(e: &Value, msg: &str, service: &str) -> bool {
    e["message"].as_str() == Some(msg) && e["service"].as_str() == Some(service)
}

/// A PostgreSQL 15 cluster in the sandbox, owned by `postgres`, on its own port.
pub struct Postgres {
    pub data: PathBuf,
    pub sock: PathBuf,
    pub port: u16,
}

impl Postgres {
    /// initdb a fresh cluster (trust auth on loopback only).
    pub fn init(sb: &Sandbox, rel: &str) -> Postgres {
        let base = sb.dir_for(rel, "postgres", false);
        let data = base.join("data");
        let sock = base.join("sock");
        for d in [&data, &sock] {
            fs::create_dir_all(d).unwrap();
        }
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
        chown_r(&base, "postgres");
        let (uid, gid) = user_ids("postgres");
        let out = Command::new(format!("{PG_BIN}/initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .uid(uid)
            .gid(gid)
            .current_dir(&base)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Postgres {
            data,
            sock,
            port: free_port(),
        }
    }

    /// The service definition (YAML list item, indented for `services:`), PostgreSQL
    /// stopped the way Cloudify does (`pg_ctl stop -m fast` = SIGINT).
    pub fn spec(&self, name: &str, extra: &str) -> String {
        format!(
            r#"    - name: {name}
      command: [{PG_BIN}/postgres, -D, {data}, -p, "{port}", -k, {sock}, -c, listen_addresses=127.0.0.1, -c, fsync=off]
      user: postgres
      stop_signal: INT
      stop_timeout: 20s
      readiness:
        check: {{type: exec, command: [pg_isready, -q, -U, postgres, -h, 127.0.0.1, -p, "{port}"]}}
        interval: 100ms
{extra}"#,
            data = self.data.display(),
            port = self.port,
            sock = self.sock.display(),
        )
    }

    /// Run SQL through psql over TCP; Err with stderr when it fails.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-c", sql])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The psql argv (for client services).
    pub fn psql_argv(&self, sql: &str) -> String {
        format!(
            r#"[psql, -X, -v, ON_ERROR_STOP=1, -h, 127.0.0.1, -p, "{}", -U, postgres, -c, "{}"]"#,
            self.port, sql
        )
    }
}

/// nginx serving a static page on its own port, as www-data, `daemon off;`.
pub struct Nginx {
    pub conf: PathBuf,
    pub port: u16,
}

impl Nginx {
    pub fn new(sb: &Sandbox, rel: &str) -> Nginx {
        let base = sb.dir_for(rel, "www-data", false);
        let port = free_port();
        fs::create_dir_all(base.join("html")).unwrap();
        fs::write(base.join("html/index.html"), "cfy-init test\n").unwrap();
        let conf = base.join("nginx.conf");
        let b = base.display();
        fs::write(
            &conf,
            format!(
                "daemon off;\nworker_processes 1;\npid {b}/nginx.pid;\nerror_log stderr;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {b}/body;\n\
                 proxy_temp_path {b}/proxy;\n  fastcgi_temp_path {b}/fastcgi;\n\
                 uwsgi_temp_path {b}/uwsgi;\n  scgi_temp_path {b}/scgi;\n\
                 server {{ listen 127.0.0.1:{port}; root {b}/html; }}\n}}\n"
            ),
        )
        .unwrap();
        chown_r(&base, "www-data");
        Nginx { conf, port }
    }

    pub fn spec(&self, name: &str, extra: &str) -> String {
        format!(
            r#"    - name: {name}
      command: [nginx, -e, stderr, -c, {conf}]
      user: www-data
      stop_signal: QUIT
      readiness:
        check: {{type: http, url: "http://127.0.0.1:{port}/"}}
        interval: 100ms
{extra}"#,
            conf = self.conf.display(),
            port = self.port
        )
    }
}

/// RabbitMQ with its own node name, ports, epmd port and data dirs, as `rabbitmq`.
pub struct Rabbit {
    pub base: PathBuf,
    pub port: u16,
    pub dist_port: u16,
    pub epmd_port: u16,
    pub node: String,
}

impl Rabbit {
    pub fn new(sb: &Sandbox, rel: &str) -> Rabbit {
        let base = sb.dir_for(rel, "rabbitmq", false);
        for d in ["mnesia", "log", "home"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        fs::write(base.join("enabled_plugins"), "[].\n").unwrap();
        fs::write(base.join("rabbitmq.conf"), "").unwrap();
        chown_r(&base, "rabbitmq");
        let port = free_port();
        Rabbit {
            node: format!("cfytest{port}@localhost"),
            base,
            port,
            dist_port: free_port(),
            epmd_port: free_port(),
        }
    }

    pub fn spec(&self, name: &str, extra: &str) -> String {
        let b = self.base.display();
        format!(
            r#"    - name: {name}
      # The inner script: Debian's /usr/sbin wrapper hard-codes /var/lib and /var/log paths.
      command: [/usr/lib/rabbitmq/bin/rabbitmq-server]
      user: rabbitmq
      umask: "0027"
      exit_codes: [0, 69]
      stop_timeout: 30s
      env:
        HOME: {b}/home
        RABBITMQ_NODENAME: {node}
        RABBITMQ_NODE_IP_ADDRESS: 127.0.0.1
        RABBITMQ_NODE_PORT: "{port}"
        RABBITMQ_DIST_PORT: "{dist}"
        ERL_EPMD_PORT: "{epmd}"
        RABBITMQ_MNESIA_BASE: {b}/mnesia
        RABBITMQ_LOG_BASE: {b}/log
        RABBITMQ_LOGS: "-"
        RABBITMQ_ENABLED_PLUGINS_FILE: {b}/enabled_plugins
        RABBITMQ_CONFIG_FILE: {b}/rabbitmq.conf
        RABBITMQ_PID_FILE: {b}/rabbit.pid
      readiness:
        check: {{type: tcp, address: "127.0.0.1:{port}"}}
        interval: 200ms
{extra}"#,
            node = self.node,
            port = self.port,
            dist = self.dist_port,
            epmd = self.epmd_port,
        )
    }
}
