//! PID-1 duties: become child subreaper, own every `waitpid` call (one reaper hands each
//! exit to whoever claimed the pid), and turn signals into supervisor events
//! (shutdown, reload, forward).
//!
//! Every child process of cfy-init must be spawned through [`Reaper::spawn`] (or
//! [`run_command`]) once the supervisor runs: the reaper calls `waitpid(-1)`, so a child
//! spawned any other way (`std::process::Command::output`, `tokio::process`) would lose its
//! exit status to it.

pub mod compat;
pub mod foreground;
pub mod signals;

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use std::os::unix::process::ExitStatusExt;

/// What to do with a claimed pid's exit: called with the pid and its raw wait status.
pub type Claim = Box<dyn FnOnce(i32, i32) + Send>;

/// The one owner of `waitpid`. A process-wide singleton: there is only one set of children.
pub struct Reaper {
    /// pid → who wants its exit status. Held while spawning, so that a child that exits at
    /// once cannot be reaped before it is claimed.
    claims: Mutex<HashMap<i32, Claim>>,
    reaped: AtomicU64,
    orphans: AtomicU64,
}

/// The process-wide reaper.
pub fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER.get_or_init(|| Reaper {
        claims: Mutex::new(HashMap::new()),
        reaped: AtomicU64::new(0),
        orphans: AtomicU64::new(0),
    })
}

impl Reaper {
    /// Spawn `cmd` and claim its pid for `on_exit`, atomically with respect to reaping.
    /// The returned `Child` gives access to its pipes; never call `wait` on it.
    pub fn spawn(&self, cmd: &mut Command, on_exit: Claim) -> io::Result<Child> {
        let mut claims = lock(&self.claims);
        let child = cmd.spawn()?;
        claims.insert(child.id() as i32, on_exit);
        Ok(child)
    }

    /// Collect every child that has exited and hand each status to its claim.
    pub fn reap_now(&self) {
        let mut claims = lock(&self.claims);
        loop {
            let mut status = 0;
            // SAFETY: plain syscall with a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            self.reaped.fetch_add(1, Ordering::Relaxed);
            match claims.remove(&pid) {
                Some(claim) => claim(pid, status),
                None => {
                    self.orphans.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Children reaped so far (claimed and orphans).
    pub fn reaped(&self) -> u64 {
        self.reaped.load(Ordering::Relaxed)
    }

    /// Orphans (re-parented processes nobody claimed) reaped so far.
    pub fn orphans(&self) -> u64 {
        self.orphans.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run the reaper until the runtime stops: one pass now (children that exited before we
/// listened), then one pass per SIGCHLD. `sigchld` must be created before the first spawn.
pub async fn reap_loop(mut sigchld: tokio::signal::unix::Signal) {
    reaper().reap_now();
    while sigchld.recv().await.is_some() {
        reaper().reap_now();
    }
}

/// Listen for SIGCHLD (call before spawning anything).
pub fn listen_sigchld() -> io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
}

/// Run a command to completion through the reaper, with an optional timeout after which
/// its process group is killed. Use this instead of `Command::output`/`status` while the
/// supervisor runs. The command is put in its own process group.
pub async fn run_command(cmd: &mut Command, timeout: Option<Duration>) -> io::Result<ExitStatus> {
    use std::os::unix::process::CommandExt;
    let (tx, rx) = tokio::sync::oneshot::channel();
    cmd.process_group(0);
    let child = reaper().spawn(
        cmd,
        Box::new(move |_pid, status| {
            let _ = tx.send(status);
        }),
    )?;
    let pid = child.id() as i32;
    drop(child);
    let status = match timeout {
        None => rx.await,
        Some(t) => match tokio::time::timeout(t, rx).await {
            Ok(r) => r,
            Err(_) => {
                kill_group(pid, libc::SIGKILL);
                return Err(io::Error::new(io::ErrorKind::TimedOut, "command timed out"));
            }
        },
    };
    status
        .map(ExitStatus::from_raw)
        .map_err(|_| io::Error::other("reaper went away"))
}

/// Like `Command::output`, but through the reaper (use it instead while the supervisor
/// runs): stdout and stderr captured, stdin null, optional timeout that kills the command's
/// process group.
pub async fn output(
    cmd: &mut Command,
    timeout: Option<Duration>,
) -> io::Result<std::process::Output> {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use tokio::io::AsyncReadExt;
    let (tx, rx) = tokio::sync::oneshot::channel();
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = reaper().spawn(
        cmd,
        Box::new(move |_pid, status| {
            let _ = tx.send(status);
        }),
    )?;
    let pid = child.id() as i32;
    let read_all = |fd: Option<std::os::fd::OwnedFd>| async move {
        let mut buf = Vec::new();
        if let Some(fd) = fd {
            let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
            pipe.read_to_end(&mut buf).await?;
        }
        Ok::<_, io::Error>(buf)
    };
    let out = read_all(child.stdout.take().map(Into::into));
    let err = read_all(child.stderr.take().map(Into::into));
    let all = async {
        let (stdout, stderr, status) = tokio::join!(out, err, rx);
        let status = status.map_err(|_| io::Error::other("reaper went away"))?;
        Ok::<_, io::Error>(std::process::Output {
            status: ExitStatus::from_raw(status),
            stdout: stdout?,
            stderr: stderr?,
        })
    };
    match timeout {
        None => all.await,
        Some(t) => match tokio::time::timeout(t, all).await {
            Ok(r) => r,
            Err(_) => {
                kill_group(pid, libc::SIGKILL);
                Err(io::Error::new(io::ErrorKind::TimedOut, "command timed out"))
            }
        },
    }
}

/// Make this process the reaper of its orphaned descendants even when it is not PID 1.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Send `sig` to the process group led by `pgid` (errors such as ESRCH are ignored: the
/// group may be gone already).
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: plain syscall.
        unsafe { libc::kill(-pgid, sig) };
    }
}

/// Send `sig` to one process (errors ignored, see [`kill_group`]).
pub fn kill_pid(pid: i32, sig: i32) {
    if pid > 1 {
        // SAFETY: plain syscall.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Exit code convention of shells and tini: the code, or 128 + the signal that killed it.
pub fn exit_code(raw_status: i32) -> i32 {
    if libc::WIFEXITED(raw_status) {
        libc::WEXITSTATUS(raw_status)
    } else if libc::WIFSIGNALED(raw_status) {
        128 + libc::WTERMSIG(raw_status)
    } else {
        128
    }
}

/// The signal that starts a graceful shutdown in Cloudify's image (`STOPSIGNAL SIGRTMIN+3`).
pub fn sigrtmin3() -> i32 {
    libc::SIGRTMIN() + 3
}

/// Parse a signal by name (`TERM`, `SIGTERM`, `RTMIN+3`) or number.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')?.parse().ok()?
        };
        let n = libc::SIGRTMIN() + off;
        return (n <= libc::SIGRTMAX()).then_some(n);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('-')?.parse().ok()?
        };
        let n = libc::SIGRTMAX() - off;
        return (n >= libc::SIGRTMIN()).then_some(n);
    }
    let full = format!("SIG{name}");
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// Signals forwarded to services: every catchable standard signal except those with a
/// meaning of their own (TERM/INT/RTMIN+3 shut down, HUP reloads, CHLD reaps; PIPE is
/// ignored). Real-time signals are not forwarded: nothing in the manager uses them, and
/// listening for all 30 would multiply the init's start-up time.
pub fn forwarded_signals() -> Vec<i32> {
    vec![
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGWINCH,
        libc::SIGCONT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGURG,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
    ]
}

/// What a received signal means to the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalAction {
    Shutdown(i32),
    Reload,
    Forward(i32),
}

/// Listen for every signal cfy-init handles and send what each means on `tx`. Must run
/// inside a tokio runtime; the listeners live as tasks on it (no wake-ups while idle).
pub fn spawn_signal_listeners(
    tx: tokio::sync::mpsc::UnboundedSender<SignalAction>,
) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut all: Vec<(i32, SignalAction)> = vec![
        (libc::SIGTERM, SignalAction::Shutdown(libc::SIGTERM)),
        (libc::SIGINT, SignalAction::Shutdown(libc::SIGINT)),
        (sigrtmin3(), SignalAction::Shutdown(sigrtmin3())),
        (libc::SIGHUP, SignalAction::Reload),
    ];
    all.extend(
        forwarded_signals()
            .into_iter()
            .map(|s| (s, SignalAction::Forward(s))),
    );
    for (sig, action) in all {
        let mut stream = match signal(SignalKind::from_raw(sig)) {
            Ok(s) => s,
            // A real-time signal may be reserved by libc; skip it.
            Err(e) if sig >= libc::SIGRTMIN() => {
                tracing::debug!(signal = sig, error = %e, "cannot listen for signal");
                continue;
            }
            Err(e) => return Err(e),
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(action).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// Every signal of supervisor mode through the one signalfd (when [`signals::block_all`]
/// ran at start-up): SIGCHLD reaps, TERM/INT/RTMIN+3 shut down, HUP reloads, every other
/// signal is forwarded, whatever its number (a signal cfy-init caused itself is not).
/// Without the early block (the library inside a test process, where other threads would
/// take the signals), one tokio listener per signal as before.
pub fn listen_all(tx: tokio::sync::mpsc::UnboundedSender<SignalAction>) -> io::Result<()> {
    if !signals::blocked() {
        let sigchld = listen_sigchld()?;
        tokio::spawn(reap_loop(sigchld));
        return spawn_signal_listeners(tx);
    }
    // SAFETY: the SignalFd owns its fd and is moved into the AsyncFd, which it outlives
    // by no instant (dropped together).
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            signals::SignalFd::new()?,
            tokio::io::Interest::READABLE,
        )
    }
    .map_err(io::Error::from)?;
    reaper().reap_now();
    tokio::spawn(async move {
        let mut buf = Vec::new();
        loop {
            let mut ready = match fd.readable().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("signalfd: {e}");
                    return;
                }
            };
            if let Err(e) = fd.get_ref().read(&mut buf) {
                tracing::error!("reading signals: {e}");
            }
            ready.clear_ready();
            let mut reap = false;
            for r in buf.drain(..) {
                let action = match r.signo {
                    libc::SIGCHLD => {
                        reap = true;
                        continue;
                    }
                    _ if r.self_inflicted() => continue,
                    libc::SIGTERM | libc::SIGINT => SignalAction::Shutdown(r.signo),
                    s if s == sigrtmin3() => SignalAction::Shutdown(s),
                    libc::SIGHUP => SignalAction::Reload,
                    s => SignalAction::Forward(s),
                };
                if tx.send(action).is_err() {
                    return;
                }
            }
            if reap {
                reaper().reap_now();
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_parse() {
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("sigusr1"), Some(libc::SIGUSR1));
        assert_eq!(parse_signal("9"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("RTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }

    #[test]
    fn exit_codes_follow_tini() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGKILL), 137);
    }
}
