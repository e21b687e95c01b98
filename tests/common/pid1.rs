//! Test support for `run -- CMD` against tini and dumb-init: an init (cfy-init, cfy-init
//! through a `tini` or `dumb-init` symlink, or Debian's peers) started as PID 1 of a new
//! PID namespace or as a plain process, its command's stdout read line by line (with a
//! bound, never a sleep), and everything it started killed when the test ends.
//!
//! Include with `#[path = "common/pid1.rs"] mod pid1;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

#[path = "signals.rs"]
mod signals;
use signals::default_signal_dispositions;

pub const BIN: &str = env!("CARGO_BIN_EXE_cfy-init");

/// Bound for anything the tests wait for (never a sleep-and-hope).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Where the init runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`).
    Pid1,
    /// A plain child of the test.
    Host,
}

pub const BOTH: [Ns; 2] = [Ns::Pid1, Ns::Host];

/// A program that prints every signal it receives (one number per line) after a
/// `ready PID` line; it handles every catchable signal, real-time ones included. It waits
/// in `select` on the wakeup fd, not in `signal.pause()`: a signal that lands between
/// Python's last check for pending handlers and the `pause` system call would leave it
/// asleep until the next signal, while the wakeup byte stays in the pipe.
const PRINT_SIGNALS: &str = r#"import os, select, signal, sys
def on(n, _):
    sys.stdout.write("%d\n" % n)
    sys.stdout.flush()
for n in range(1, signal.SIGRTMAX + 1):
    if n in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
        continue
    try:
        signal.signal(n, on)
    except (OSError, ValueError, RuntimeError):
        pass
print("ready %d" % os.getpid(), flush=True)
if len(sys.argv) > 1:
    open(sys.argv[1], "w").close()
r, w = os.pipe()
os.set_blocking(w, False)
signal.set_wakeup_fd(w, warn_on_full_buffer=False)
while True:
    select.select([r], [], [])
    os.read(r, 4096)
"#;

/// A scratch directory with the `tini` / `dumb-init` symlinks and the helper programs.
pub struct Harness {
    pub dir: tempfile::TempDir,
    /// One scenario at a time: each starts inits, peers and signal storms of its own, and
    /// two side by side on a loaded 2-core machine made the process-death and group scenarios
    /// miss their deadlines (seen at load 6-8 on the merged tree).
    _serial: std::sync::MutexGuard<'static, ()>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        // A scenario that failed (panicked holding the lock) must not fail the others.
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        for alias in ["tini", "dumb-init"] {
            symlink(BIN, dir.path().join(alias)).unwrap();
        }
        std::fs::write(dir.path().join("print_signals.py"), PRINT_SIGNALS).unwrap();
        Harness {
            dir,
            _serial: serial,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `cfy-init --root DIR run FLAGS --`
    pub fn cfy(&self, flags: &[&str]) -> Vec<String> {
        let mut v = vec![
            BIN.to_string(),
            "--root".into(),
            self.path("root").display().to_string(),
            "run".into(),
        ];
        v.extend(flags.iter().map(|s| s.to_string()));
        v.push("--".into());
        v
    }

    /// cfy-init invoked through its `tini` or `dumb-init` symlink.
    pub fn alias(&self, name: &str, args: &[&str]) -> Vec<String> {
        let mut v = vec![self.path(name).display().to_string()];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// Debian's own tini / dumb-init.
    pub fn peer(&self, name: &str, args: &[&str]) -> Vec<String> {
        let mut v = vec![format!("/usr/bin/{name}")];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// The signal printer, touching `ready` (if given) once its handlers are in place.
    pub fn print_signals(&self, ready: Option<&Path>) -> Vec<String> {
        let mut v = vec![
            "python3".to_string(),
            self.path("print_signals.py").display().to_string(),
        ];
        if let Some(r) = ready {
            v.push(r.display().to_string());
        }
        v
    }

    /// Start `init + cmd` in `ns`, stdout piped into [`Running::line`].
    pub fn spawn(&self, ns: Ns, init: &[String], cmd: &[&str]) -> Running {
        self.spawn_with(ns, init, cmd, |_| {})
    }

    /// [`Harness::spawn`] with a chance to adjust the command (env, pre_exec).
    pub fn spawn_with(
        &self,
        ns: Ns,
        init: &[String],
        cmd: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Running {
        let stderr = self.path(&format!("stderr-{}", unique()));
        let mut argv: Vec<String> = Vec::new();
        if ns == Ns::Pid1 {
            argv.extend(
                ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"].map(String::from),
            );
        }
        argv.extend(init.iter().cloned());
        argv.extend(cmd.iter().map(|s| s.to_string()));
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..])
            .env("CFY_INIT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .process_group(0);
        default_signal_dispositions(&mut c);
        adjust(&mut c);
        let mut child = c.spawn().expect("spawn the init");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            ns,
            init_pid: None,
            stderr,
            code: None,
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Poll `f` until it returns Some, or panic with `what` after [`PATIENCE`].
pub fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > PATIENCE {
            panic!("timed out after {PATIENCE:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Children of a host pid.
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Every descendant of a host pid (children first).
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = children(pid);
    while let Some(p) = todo.pop() {
        out.push(p);
        todo.extend(children(p));
    }
    out
}

/// The state letter of a host pid (`R`, `S`, `T`, `Z`, ...), None when gone.
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    !matches!(state(pid), None | Some('Z') | Some('X'))
}

pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, sig) };
}

/// A running init and its command.
pub struct Running {
    pub child: Child,
    lines: Receiver<String>,
    pub ns: Ns,
    init_pid: Option<i32>,
    stderr: PathBuf,
    code: Option<i32>,
}

impl Running {
    /// Host pid of the init (a child of unshare in [`Ns::Pid1`]).
    pub fn init_pid(&mut self) -> i32 {
        if let Some(p) = self.init_pid {
            return p;
        }
        let me = self.child.id() as i32;
        let p = match self.ns {
            Ns::Host => me,
            Ns::Pid1 => poll("the init to start", || children(me).first().copied()),
        };
        self.init_pid = Some(p);
        p
    }

    /// Wait until the init has started its command (signals sent before that could meet
    /// an init that has not set up its handling yet, in any init).
    pub fn wait_started(&mut self) -> i32 {
        let init = self.init_pid();
        poll("the init to start its command", || {
            children(init).first().copied()
        })
    }

    /// The next line of the command's stdout.
    pub fn line(&self) -> String {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "no output line within {PATIENCE:?}; stderr:\n{}",
                    self.stderr()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("output ended; stderr:\n{}", self.stderr())
            }
        }
    }

    /// A line if one is there now.
    pub fn try_line(&self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Read lines until one equals `want`; returns those before it.
    pub fn until(&self, want: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let l = self.line();
            if l == want {
                return seen;
            }
            seen.push(l);
        }
    }

    pub fn signal(&mut self, sig: i32) {
        let pid = self.init_pid();
        kill(pid, sig);
    }

    /// Exit code of the init (unshare passes it through); None while it runs.
    pub fn try_code(&mut self) -> Option<i32> {
        if self.code.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                use std::os::unix::process::ExitStatusExt;
                self.code = Some(st.code().unwrap_or(128 + st.signal().unwrap_or(0)));
            }
        }
        self.code
    }

    pub fn wait(&mut self) -> i32 {
        poll("the init to exit", || self.try_code())
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Everything the init started, then the init (or unshare, which takes the
        // namespace down with it).
        let me = self.child.id() as i32;
        for p in descendants(me) {
            kill(p, libc::SIGKILL);
        }
        if self.try_code().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
