//! `run -- CMD`: cfy-init as a transparent init for one command (tini's model). Every
//! signal read from the one signalfd goes to the command (or is rewritten, ignored, or
//! turned into a TERM-then-KILL shutdown, per signal), orphans are reaped, and cfy-init exits
//! with the command's status once it has exited. No runtime, no threads: one
//! `sigtimedwait` loop on the blocked mask.
//!
//! Process-group mode (`--group`, dumb-init's default) puts the command in a session of
//! its own, signals its whole group, gives what is left of the group TERM (then KILL after
//! the grace) when the command exits, and stops cfy-init itself after forwarding
//! TSTP/TTIN/TTOU so that a shell's job control sees the whole job stop and resume.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use super::signals::{self, name, Received, SignalState};

/// What a received signal does in `run --` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it on unchanged (the default for every signal).
    Forward,
    /// Send this signal instead.
    Rewrite(i32),
    /// Drop it.
    Ignore,
    /// Send SIGTERM and SIGKILL after the grace (`--kill-after`, else the shutdown deadline).
    Shutdown,
}

/// One action per signal number (index = signal).
#[derive(Debug, Clone)]
pub struct Actions(Vec<Action>);

impl Default for Actions {
    fn default() -> Self {
        Actions(vec![Action::Forward; libc::SIGRTMAX() as usize + 1])
    }
}

impl Actions {
    pub fn get(&self, sig: i32) -> Action {
        self.0.get(sig as usize).copied().unwrap_or(Action::Forward)
    }

    pub fn set(&mut self, sig: i32, action: Action) {
        if let Some(slot) = self.0.get_mut(sig as usize) {
            *slot = action;
        }
    }
}

/// dumb-init's `--rewrite S:R`: R = 0 ignores S. Names or numbers.
pub fn parse_rewrite(s: &str) -> Result<(i32, Action), String> {
    let (from, to) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected SIGNAL:SIGNAL (0 ignores)"))?;
    let from = catchable(from)?;
    let action = match to.trim() {
        "0" => Action::Ignore,
        to => match super::parse_signal(to) {
            // 32 and 33 are the C library's own, below SIGRTMIN.
            Some(n) if n < 32 || n >= libc::SIGRTMIN() => Action::Rewrite(n),
            _ => return Err(format!("{to:?} is not a signal")),
        },
    };
    Ok((from, action))
}

/// `--signal S:ACTION`, ACTION one of `forward`, `ignore`, `shutdown` or a signal to send
/// instead.
pub fn parse_rule(s: &str) -> Result<(i32, Action), String> {
    let (sig, what) = s.split_once(':').ok_or_else(|| {
        format!("{s:?}: expected SIGNAL:forward|ignore|shutdown|SIGNAL (for example HUP:USR1)")
    })?;
    let sig = catchable(sig)?;
    let action = match what.trim().to_ascii_lowercase().as_str() {
        "forward" => Action::Forward,
        "ignore" => Action::Ignore,
        "shutdown" => Action::Shutdown,
        _ => return parse_rewrite(s),
    };
    Ok((sig, action))
}

fn catchable(s: &str) -> Result<i32, String> {
    let sig = super::parse_signal(s).ok_or_else(|| format!("{s:?} is not a signal"))?;
    if !signals::catchable(sig) || sig == libc::SIGCHLD {
        return Err(format!(
            "{} cannot be caught or is cfy-init's own",
            name(sig)
        ));
    }
    Ok(sig)
}

/// Flags of `cfy-init run` that shape `run -- CMD` (they do nothing in supervisor mode).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunFlags {
    /// SIGKILL the command this long after a TERM, INT or RTMIN+3 was forwarded to it
    /// (default: never, the caller's own timeout such as `docker stop -t` decides).
    #[arg(long, env = "CFY_INIT_KILL_AFTER", value_parser = humantime::parse_duration)]
    pub kill_after: Option<Duration>,
    /// Process-group mode: the command gets a session of its own, signals go to its whole
    /// process group, what is left of the group gets TERM (then KILL after the grace) when
    /// the command exits, and TSTP/TTIN/TTOU stop the group and then cfy-init.
    #[arg(short = 'g', long, env = "CFY_INIT_GROUP",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub group: bool,
    /// Signals go to the command only, whatever `--group` or CFY_INIT_GROUP say.
    #[arg(short = 'c', long)]
    pub single_child: bool,
    /// Exit with 0 when the command's exit code (128+N when killed by signal N) is CODE
    /// (repeatable; tini's `-e`).
    #[arg(short = 'e', long = "expect-exit", value_name = "CODE",
          value_parser = clap::value_parser!(u8))]
    pub expect: Vec<u8>,
    /// Log every reaped orphan as a warning (tini's `-w`).
    #[arg(short = 'w', long)]
    pub warn_reaped: bool,
    /// Signal cfy-init gets when its parent dies, forwarded like any other (tini's `-p`).
    #[arg(short = 'p', long, value_name = "SIGNAL", value_parser = parse_any_signal)]
    pub pdeathsig: Option<i32>,
    /// Accepted for tini's `-s`: cfy-init always registers as child subreaper.
    #[arg(short = 's', long)]
    pub subreaper: bool,
    /// Log each forwarded signal and reaped process at info level (tini's and dumb-init's
    /// `-v`).
    #[arg(short = 'v', long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Send signal R when S arrives; R = 0 drops S (dumb-init's `--rewrite`, repeatable).
    #[arg(short = 'r', long, value_name = "S:R", value_parser = parse_rewrite)]
    pub rewrite: Vec<(i32, Action)>,
    /// What signal S does: `S:forward`, `S:ignore`, `S:shutdown` or `S:OTHER` (repeatable).
    #[arg(long = "signal", value_name = "S:ACTION", value_parser = parse_rule)]
    pub signal: Vec<(i32, Action)>,
    /// Signal mask and ignored signals of the command: those cfy-init was started with
    /// (`inherit`), or none (`clean`).
    #[arg(long, env = "CFY_INIT_SIGNAL_STATE", value_enum, default_value_t)]
    pub signal_state: SignalState,
}

fn parse_any_signal(s: &str) -> Result<i32, String> {
    super::parse_signal(s).ok_or_else(|| format!("{s:?} is not a signal"))
}

/// Everything the loop needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    pub actions: Actions,
    pub kill_after: Option<Duration>,
    /// Grace for `shutdown` actions without `kill_after`, and for the group's leftovers.
    pub grace: Duration,
    /// Signals go to the command's process group.
    pub signal_group: bool,
    /// The command gets its own session; leftovers of its group are stopped at its exit;
    /// TSTP/TTIN/TTOU stop cfy-init too.
    pub setsid: bool,
    /// After forwarding TSTP/TTIN/TTOU, stop cfy-init too (CONT resumes it; dumb-init).
    pub suspend_self: bool,
    pub expect: Vec<u8>,
    pub warn_reaped: bool,
    pub pdeathsig: Option<i32>,
    pub verbose: bool,
    pub signal_state: SignalState,
    /// Prefix of the messages printed straight to stderr (spawn failure).
    pub prog: &'static str,
}

impl Options {
    /// Defaults: transparent, every signal forwarded to the command only.
    pub fn new(grace: Duration) -> Self {
        Options {
            actions: Actions::default(),
            kill_after: None,
            grace,
            signal_group: false,
            setsid: false,
            suspend_self: false,
            expect: Vec::new(),
            warn_reaped: false,
            pdeathsig: None,
            verbose: false,
            signal_state: SignalState::Inherit,
            prog: "cfy-init",
        }
    }

    /// Process-group mode on or off (dumb-init's defaults come with it: TSTP, TTIN and
    /// TTOU become STOP for the group, which cannot ignore it, unless a rule says else).
    pub fn group_mode(&mut self, on: bool) {
        self.signal_group = on;
        self.setsid = on;
        self.suspend_self = on;
        if on {
            for s in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
                self.actions.set(s, Action::Rewrite(libc::SIGSTOP));
            }
        }
    }

    /// Options from `run`'s flags (`grace`: the shutdown deadline of the config).
    pub fn from_flags(flags: &RunFlags, grace: Duration) -> Self {
        let mut o = Options::new(grace);
        o.group_mode(flags.group && !flags.single_child);
        o.kill_after = flags.kill_after;
        o.expect = flags.expect.clone();
        o.warn_reaped = flags.warn_reaped;
        o.pdeathsig = flags.pdeathsig;
        o.verbose = flags.verbose > 0;
        o.signal_state = flags.signal_state;
        for (sig, action) in flags.rewrite.iter().chain(&flags.signal) {
            o.actions.set(*sig, *action);
        }
        o
    }
}

macro_rules! note {
    ($verbose:expr, $($t:tt)*) => {
        if $verbose { tracing::info!($($t)*) } else { tracing::debug!($($t)*) }
    };
}

/// Run `argv` under cfy-init until it exits; returns cfy-init's exit code. Signals must
/// have been blocked with [`signals::block_all`] before any thread was started.
pub fn run(argv: &[String], opts: &Options) -> i32 {
    signals::block_all();
    // SAFETY: getpid/prctl with integer arguments.
    unsafe {
        if libc::getpid() != 1 {
            if let Err(e) = super::become_subreaper() {
                tracing::warn!("cannot become child subreaper, orphans will not be reaped: {e}");
            }
        }
        if let Some(sig) = opts.pdeathsig {
            libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0);
        }
    }
    // SAFETY: isatty/tcgetpgrp/getpgrp on fd 0 only read state.
    let tty_fg =
        !opts.setsid && unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() };
    let mut skip_once = Vec::new();
    if opts.setsid {
        skip_once = release_tty();
    }
    let pid = match spawn(argv, opts, tty_fg) {
        Ok(pid) => pid,
        Err(e) => {
            let prog = argv.first().map(String::as_str).unwrap_or("");
            eprintln!("[{}] {prog}: {}", opts.prog, strerror(&e));
            tracing::error!("cannot run {prog}: {e}");
            return match e.kind() {
                io::ErrorKind::NotFound => 127,
                _ => 126,
            };
        }
    };
    note!(opts.verbose, pid, "child spawned");
    let mut lp = Loop {
        opts,
        pid,
        tty_fg,
        status: None,
        kill_at: None,
        group_at: None,
        group_killed: None,
        self_stopped: false,
        skip_once,
        reaped: 0,
        orphans: 0,
    };
    let code = lp.run();
    tracing::info!(
        code,
        reaped = lp.reaped,
        orphans = lp.orphans,
        "main command finished"
    );
    code
}

/// Group mode: let go of the controlling terminal so that the command's new session can
/// take it (TIOCSCTTY). A session leader letting go makes the kernel send HUP and CONT to
/// its foreground group, cfy-init included: those two are dropped once (dumb-init's fix).
fn release_tty() -> Vec<i32> {
    // SAFETY: plain syscalls on fd 0.
    unsafe {
        if libc::isatty(0) != 1 || libc::tcgetsid(0) != libc::getsid(0) {
            return Vec::new();
        }
        let leader = libc::getsid(0) == libc::getpid() && libc::tcgetpgrp(0) == libc::getpgrp();
        if libc::ioctl(0, libc::TIOCNOTTY) != 0 {
            return Vec::new();
        }
        if leader {
            vec![libc::SIGHUP, libc::SIGCONT]
        } else {
            Vec::new()
        }
    }
}

fn strerror(e: &io::Error) -> String {
    // "No such file or directory (os error 2)" → the C library's text only.
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn spawn(argv: &[String], opts: &Options, tty_fg: bool) -> io::Result<i32> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(prog);
    cmd.args(args);
    // cfy-init itself moves to / before the spawn (so that it keeps no reference to a
    // directory that may be unmounted); the command starts where cfy-init was started.
    if let Ok(dir) = std::env::current_dir() {
        cmd.current_dir(dir);
    }
    // SAFETY: a static C string.
    unsafe { libc::chdir(c"/".as_ptr()) };
    let inherited = signals::inherited();
    let state = opts.signal_state;
    let setsid = opts.setsid;
    // SAFETY: the closure makes async-signal-safe syscalls only, on copied data.
    unsafe {
        cmd.pre_exec(move || {
            if setsid {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                // Take the terminal along when no other session holds it (dumb-init).
                if libc::isatty(0) == 1 {
                    libc::ioctl(0, libc::TIOCSCTTY, 0);
                }
            } else {
                if libc::setpgid(0, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if tty_fg {
                    // Taking the foreground from the background needs SIGTTOU blocked.
                    let mut ttou: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut ttou);
                    libc::sigaddset(&mut ttou, libc::SIGTTOU);
                    libc::sigprocmask(libc::SIG_BLOCK, &ttou, std::ptr::null_mut());
                    libc::tcsetpgrp(0, libc::getpid());
                }
            }
            signals::apply_in_child(state, &inherited);
            Ok(())
        });
    }
    // The Child is dropped without a wait: the loop reaps it with waitpid(-1).
    Ok(cmd.spawn()?.id() as i32)
}

struct Loop<'a> {
    opts: &'a Options,
    pid: i32,
    tty_fg: bool,
    /// The command's raw wait status once reaped.
    status: Option<i32>,
    /// When the command gets SIGKILL (after a forwarded TERM/INT/RTMIN+3 or a shutdown).
    kill_at: Option<Instant>,
    /// Group mode, command gone: when the rest of its group gets SIGKILL.
    group_at: Option<Instant>,
    /// When the group got SIGKILL (then wait a little for it to go).
    group_killed: Option<Instant>,
    /// cfy-init stopped itself for job control; the next CONT resumes the command's group.
    self_stopped: bool,
    /// Signals the kernel sent because cfy-init let go of its terminal: dropped once.
    skip_once: Vec<i32>,
    reaped: u64,
    orphans: u64,
}

impl Loop<'_> {
    fn run(&mut self) -> i32 {
        // Reap once first (a command that exited at once), then after each SIGCHLD.
        let mut reap = true;
        loop {
            if reap {
                self.reap();
                reap = false;
            }
            if let Some(status) = self.status {
                if !self.group_pending() {
                    return self.exit_code(status);
                }
            }
            let now = Instant::now();
            self.deadlines(now);
            let next = [
                self.kill_at,
                self.group_at,
                self.group_killed.map(|t| t + LINGER),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = next.map(|t| {
                t.saturating_duration_since(now)
                    .max(Duration::from_millis(1))
            });
            match signals::wait_one(timeout) {
                Ok(Some(r)) if r.signo == libc::SIGCHLD => reap = true,
                Ok(Some(r)) => self.on_signal(r),
                Ok(None) => {}
                Err(e) => tracing::error!("waiting for signals: {e}"),
            }
        }
    }

    fn exit_code(&self, status: i32) -> i32 {
        let code = super::exit_code(status);
        if self.opts.expect.iter().any(|c| i32::from(*c) == code) {
            note!(self.opts.verbose, code, "exit code remapped to 0");
            0
        } else {
            code
        }
    }

    /// Group mode after the command's exit: true while members of its group remain (they
    /// got TERM at once and get KILL at the grace).
    fn group_pending(&mut self) -> bool {
        if !self.opts.setsid {
            return false;
        }
        // SAFETY: signal 0 only checks for existence.
        let alive = unsafe { libc::kill(-self.pid, 0) } == 0;
        if !alive {
            return false;
        }
        if let Some(t) = self.group_killed {
            if t.elapsed() >= LINGER {
                tracing::warn!("processes of the command's group outlived SIGKILL; exiting");
                return false;
            }
        }
        if self.group_at.is_none() && self.group_killed.is_none() {
            note!(
                self.opts.verbose,
                "sending SIGTERM to the rest of the command's group"
            );
            super::kill_group(self.pid, libc::SIGTERM);
            self.group_at = Some(Instant::now() + self.opts.grace);
        }
        true
    }

    fn deadlines(&mut self, now: Instant) {
        if self.kill_at.is_some_and(|t| t <= now) {
            self.kill_at = None;
            if self.status.is_none() {
                tracing::warn!(
                    "the command did not exit within the grace after the stop signal; SIGKILL"
                );
                self.send(libc::SIGKILL);
            }
        }
        if self.group_at.is_some_and(|t| t <= now) {
            self.group_at = None;
            tracing::warn!("the command's group did not exit within the grace; SIGKILL");
            super::kill_group(self.pid, libc::SIGKILL);
            self.group_killed = Some(now);
        }
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: plain syscall with a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::WUNTRACED) };
            if pid <= 0 {
                return;
            }
            if libc::WIFSTOPPED(status) {
                if pid == self.pid {
                    self.main_stopped(libc::WSTOPSIG(status));
                }
                continue;
            }
            self.reaped += 1;
            if pid == self.pid {
                note!(
                    self.opts.verbose,
                    pid,
                    code = super::exit_code(status),
                    "command exited"
                );
                self.status = Some(status);
            } else {
                self.orphans += 1;
                if self.opts.warn_reaped {
                    tracing::warn!("reaped zombie process with pid={pid}");
                } else {
                    tracing::trace!(pid, "reaped orphan");
                }
            }
        }
    }

    /// The command stopped. When it holds the terminal (Ctrl-Z), stop cfy-init too, so the
    /// shell that started cfy-init sees its job stop and takes the terminal back.
    fn main_stopped(&mut self, sig: i32) {
        note!(self.opts.verbose, signal = %name(sig), "command stopped");
        if self.tty_fg {
            self.self_stopped = true;
            // SAFETY: plain syscalls.
            unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
        }
    }

    fn on_signal(&mut self, r: Received) {
        if r.self_inflicted() {
            tracing::debug!(signal = %name(r.signo), "not forwarding a signal cfy-init caused itself");
            return;
        }
        if let Some(i) = self.skip_once.iter().position(|s| *s == r.signo) {
            self.skip_once.remove(i);
            tracing::debug!(signal = %name(r.signo), "dropped: sent for letting go of the terminal");
            return;
        }
        if r.signo == libc::SIGCONT && self.self_stopped {
            // `fg`: give the terminal back to the command and resume its whole group.
            self.self_stopped = false;
            // SAFETY: plain syscalls; SIGTTOU is blocked, so tcsetpgrp works from here.
            unsafe { libc::tcsetpgrp(0, self.pid) };
            super::kill_group(self.pid, libc::SIGCONT);
            note!(self.opts.verbose, "resumed the command's group");
            return;
        }
        let sent = match self.opts.actions.get(r.signo) {
            Action::Ignore => {
                note!(self.opts.verbose, signal = %name(r.signo), "signal ignored");
                None
            }
            Action::Forward => Some(r.signo),
            Action::Rewrite(to) => Some(to),
            Action::Shutdown => {
                if self.kill_at.is_none() {
                    let grace = self.opts.kill_after.unwrap_or(self.opts.grace);
                    self.kill_at = Some(Instant::now() + grace);
                }
                Some(libc::SIGTERM)
            }
        };
        if let Some(sig) = sent {
            self.send(sig);
            note!(self.opts.verbose, signal = %name(r.signo), sent = %name(sig), code = r.code, from = r.pid, "signal forwarded");
            let stops = [libc::SIGTERM, libc::SIGINT, super::sigrtmin3()];
            if let (Some(after), None) = (self.opts.kill_after, self.kill_at) {
                if stops.contains(&sig) && self.status.is_none() {
                    self.kill_at = Some(Instant::now() + after);
                }
            }
        }
        if self.opts.suspend_self
            && [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&r.signo)
        {
            note!(
                self.opts.verbose,
                "stopping cfy-init after the command's group"
            );
            // SAFETY: plain syscalls.
            unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
        }
    }

    fn send(&self, sig: i32) {
        if self.opts.signal_group || (self.status.is_some() && self.opts.setsid) {
            super::kill_group(self.pid, sig);
        } else if self.status.is_none() {
            super::kill_pid(self.pid, sig);
        }
    }
}

/// How long to wait for a SIGKILLed group to go before exiting anyway.
const LINGER: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        assert_eq!(
            parse_rewrite("15:2"),
            Ok((libc::SIGTERM, Action::Rewrite(libc::SIGINT)))
        );
        assert_eq!(parse_rewrite("INT:0"), Ok((libc::SIGINT, Action::Ignore)));
        assert!(parse_rewrite("15").is_err());
        assert!(parse_rewrite("KILL:1").is_err());
        assert_eq!(
            parse_rule("TERM:shutdown"),
            Ok((libc::SIGTERM, Action::Shutdown))
        );
        assert_eq!(
            parse_rule("HUP:USR1"),
            Ok((libc::SIGHUP, Action::Rewrite(libc::SIGUSR1)))
        );
        assert_eq!(
            parse_rule("RTMIN+3:ignore"),
            Ok((libc::SIGRTMIN() + 3, Action::Ignore))
        );
    }
}
