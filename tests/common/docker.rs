//! Docker test helpers: build the production manager and sidecar images once per test binary
//! (from the static release binaries of scripts/build-release.sh and the stand-in base image,
//! nothing pulled), run containers with a
//! hard time limit on every `docker` call, and clean up what a test created even when it fails.

#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The repository root (the root package's manifest directory).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The output of a finished command.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    /// stdout and stderr, for messages.
    pub fn both(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Run `cmd` to completion, killing it after `limit` (a test must fail, not hang).
pub fn run_limited(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_t.join().unwrap_or_default();
            panic!("{what} did not finish within {limit:?}; stderr: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        code: status.code(),
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// `docker ARGS` with a time limit.
pub fn docker(args: &[&str], limit: Duration) -> Output {
    run_limited(Command::new("docker").args(args), limit)
}

/// `docker ARGS` that must succeed; returns trimmed stdout.
pub fn docker_ok(args: &[&str], limit: Duration) -> String {
    let out = docker(args, limit);
    assert!(
        out.ok(),
        "docker {} failed ({:?}): {}",
        args.join(" "),
        out.code,
        out.both()
    );
    out.stdout.trim().to_string()
}

/// The images under test, and the base the manager was built FROM.
pub struct Images {
    pub manager: String,
    pub sidecar: String,
    pub base: String,
}

/// The static release binaries (scripts/build-release.sh; an up-to-date build is quick).
pub fn release_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Not with the environment cargo gives tests (CARGO_PKG_*, LD_LIBRARY_PATH, ...):
        // build scripts that watch those would make this build and one from a shell
        // (benches, scripts) rebuild everything in turn.
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("scripts/build-release.sh")).env_clear();
        for var in [
            "PATH",
            "HOME",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "CARGO_TARGET_DIR",
            "TMPDIR",
        ] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        let out = run_limited(&mut cmd, Duration::from_secs(1800));
        assert!(
            out.ok(),
            "scripts/build-release.sh failed ({:?}):\n{}",
            out.code,
            out.stderr
        );
        PathBuf::from(out.stdout.trim())
    })
    .clone()
}

/// `docker image inspect`'s size of an image, in bytes.
pub fn image_size(image: &str) -> u64 {
    docker_ok(
        &["image", "inspect", "-f", "{{.Size}}", image],
        Duration::from_secs(30),
    )
    .parse()
    .unwrap()
}

/// Tests in one binary share the engine, images and names: run them one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Build (once) the manager and sidecar images from the static release binaries of this
/// tree, FROM the stand-in base image; starts a Docker engine when none answers. Prints
/// their sizes.
pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let bin_dir = release_dir();
        let script = repo().join("scripts/build-image.sh");
        // The first run debootstraps the stand-in root file system (cached afterwards).
        let out = run_limited(
            Command::new("bash").arg(&script).args([
                "--prebuilt",
                bin_dir.to_str().unwrap(),
                "--standin",
                "--tag",
                "cfy-init-test/manager:latest",
                "--sidecar-tag",
                "cfy-init-test/recover:latest",
            ]),
            Duration::from_secs(1800),
        );
        assert!(
            out.ok(),
            "scripts/build-image.sh failed ({:?}):\n{}",
            out.code,
            out.stderr
        );
        let get = |key: &str| {
            out.stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("build-image.sh printed no {key}= line: {}", out.stdout))
                .to_string()
        };
        for line in out.stdout.lines().filter(|l| l.starts_with("size ")) {
            eprintln!("build-image.sh: {line}");
        }
        let manager = get("manager");
        let base = docker_ok(
            &[
                "image",
                "inspect",
                "-f",
                "{{index .Config.Labels \"io.cfy-init.base\"}}",
                &manager,
            ],
            Duration::from_secs(30),
        );
        Images {
            manager,
            sidecar: get("sidecar"),
            base,
        }
    })
}

/// A unique name for a container or volume of this test process.
pub fn unique(what: &str) -> String {
    format!("cfy-init-test-{}-{what}", std::process::id())
}

/// Removes the containers and volumes a test created, even when the test panics.
#[derive(Default)]
pub struct Cleanup {
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Cleanup {
    pub fn container(&mut self, name: &str) {
        self.containers.push(name.to_string());
    }
    pub fn volume(&mut self, name: &str) {
        self.volumes.push(name.to_string());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c], Duration::from_secs(60));
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v], Duration::from_secs(60));
        }
    }
}

/// The container's whole log (stdout and stderr).
pub fn logs(container: &str) -> String {
    docker(&["logs", container], Duration::from_secs(60)).both()
}

/// The last `n` lines of the container's log, for failure messages.
pub fn log_tail(container: &str, n: usize) -> String {
    let all = logs(container);
    let lines: Vec<&str> = all.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `docker inspect -f FORMAT container`.
pub fn inspect(container: &str, format: &str) -> String {
    docker_ok(
        &["inspect", "-f", format, container],
        Duration::from_secs(30),
    )
}

/// `docker exec container ARGS` (as the container's user, with its environment).
pub fn exec(container: &str, args: &[&str]) -> Output {
    let mut all = vec!["exec", container];
    all.extend_from_slice(args);
    docker(&all, Duration::from_secs(60))
}

/// `sh -c SCRIPT` in the container; must succeed; returns trimmed stdout.
pub fn sh(container: &str, script: &str) -> String {
    let out = exec(container, &["sh", "-c", script]);
    assert!(
        out.ok(),
        "in {container}: sh -c {script:?} failed ({:?}): {}\nlog tail:\n{}",
        out.code,
        out.both(),
        log_tail(container, 40)
    );
    out.stdout.trim().to_string()
}

/// Poll `cfy-init ready` in the container until it says ready; fail early with the log when
/// the container stops, and after `limit` with the last status.
pub fn wait_ready(container: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        if inspect(container, "{{.State.Running}}") != "true" {
            panic!(
                "{container} stopped before it was ready (exit code {}); log tail:\n{}",
                inspect(container, "{{.State.ExitCode}}"),
                log_tail(container, 60)
            );
        }
        let out = exec(container, &["/usr/local/bin/cfy-init", "ready"]);
        if out.ok() {
            return;
        }
        last = out.both();
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "{container} not ready within {limit:?}; last `cfy-init ready`: {last}\nlog tail:\n{}",
        log_tail(container, 60)
    );
}

/// Poll until `docker inspect` reports the HEALTHCHECK as healthy.
pub fn wait_healthy(container: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut status = String::new();
    while Instant::now() < deadline {
        status = inspect(
            container,
            "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
        );
        if status == "healthy" {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!(
        "{container}: HEALTHCHECK status {status:?} after {limit:?}; probes: {}",
        inspect(container, "{{json .State.Health}}")
    );
}

/// `docker stop` with Docker's default 10 s grace, then the exit code. 137 means the init
/// did not finish within the grace period and was killed.
pub fn stop(container: &str) -> i32 {
    docker_ok(&["stop", container], Duration::from_secs(60));
    let code = inspect(container, "{{.State.ExitCode}}");
    code.parse()
        .unwrap_or_else(|_| panic!("{container}: exit code {code:?}"))
}

/// Assert that nothing in the container's host config asks for privileges.
pub fn assert_unprivileged(container: &str) {
    let host = inspect(
        container,
        "{{.HostConfig.Privileged}} {{json .HostConfig.CapAdd}} {{json .HostConfig.SecurityOpt}}",
    );
    assert_eq!(
        host, "false null null",
        "{container}: privileged / added capabilities / security options"
    );
    let mounts = inspect(container, "{{range .Mounts}}{{.Destination}} {{end}}");
    assert!(
        !mounts.contains("/sys/fs/cgroup"),
        "{container}: cgroup mount: {mounts}"
    );
}
