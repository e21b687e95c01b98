//! One blocked mask and one `signalfd` for every signal cfy-init handles.
//!
//! [`block_all`] runs first thing in `cfy-init run` (before any thread exists, so every
//! thread inherits the mask): it records the mask and the ignored set cfy-init was started
//! with, then blocks every signal but KILL and STOP. From then on no signal has a default
//! action on cfy-init (it survives each of them when it is not PID 1) and every one is read
//! from one `signalfd` (supervisor mode, on the runtime) or one `sigtimedwait` loop
//! (`run --`, no runtime). A synchronous fault (a real SIGSEGV in cfy-init) cannot be
//! blocked: the kernel unblocks it and kills the process, so whatever is read from the
//! signalfd, whatever its number, was sent (kill(2), a tty, a timer, pdeathsig).
//!
//! Children get either the state cfy-init inherited ([`SignalState::Inherit`], `run --`'s
//! default, like tini) or a clean one ([`SignalState::Clean`], supervised services).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// The mask and the ignored dispositions cfy-init was started with.
#[derive(Clone, Copy)]
pub struct Inherited {
    pub mask: libc::sigset_t,
    pub ignored: libc::sigset_t,
}

static INHERITED: OnceLock<Inherited> = OnceLock::new();
static BLOCKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`block_all`] ran (in `main`, before any thread: then every thread has every
/// signal blocked and the signalfd sees each one).
pub fn blocked() -> bool {
    BLOCKED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Which signal state a child starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SignalState {
    /// The mask and ignored signals cfy-init was started with (tini's and a shell's model).
    #[default]
    Inherit,
    /// Nothing blocked, nothing ignored.
    Clean,
}

/// One received signal, as the kernel describes it.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub signo: i32,
    /// `si_code`: `SI_USER` (0) for kill(2), negative for sigqueue/tkill/timers,
    /// `SI_KERNEL` (0x80) for a tty's INT/QUIT/TSTP, positive for child events.
    pub code: i32,
    /// Sender's pid (0 for the kernel).
    pub pid: u32,
}

impl Received {
    /// A signal cfy-init caused to itself (SIGPIPE or SIGXFSZ from its own write, its own
    /// CPU limit): about cfy-init, not for its child.
    pub fn self_inflicted(&self) -> bool {
        let own = std::process::id();
        (self.pid == own && self.code == libc::SI_USER)
            || (self.signo == libc::SIGXCPU && self.code == libc::SI_KERNEL)
    }
}

/// Every signal number that exists on this system, 1..=SIGRTMAX.
pub fn all_signals() -> impl Iterator<Item = i32> {
    1..=libc::SIGRTMAX()
}

/// A signal a process can catch (not KILL or STOP).
pub fn catchable(sig: i32) -> bool {
    sig != libc::SIGKILL && sig != libc::SIGSTOP && (1..=libc::SIGRTMAX()).contains(&sig)
}

/// Record the inherited state and block every catchable signal in the calling thread (call
/// before any other thread exists). Idempotent.
pub fn block_all() {
    BLOCKED.store(true, std::sync::atomic::Ordering::Relaxed);
    INHERITED.get_or_init(|| {
        // SAFETY: sigset and sigaction calls on local, properly initialised structures.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let mut ignored: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut ignored);
            for sig in all_signals().filter(|s| catchable(*s)) {
                // The Rust runtime ignores SIGPIPE before main: what the parent gave is
                // lost, so PIPE is never counted as inherited-ignored.
                if sig == libc::SIGPIPE {
                    continue;
                }
                let mut act: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut act) == 0
                    && act.sa_sigaction == libc::SIG_IGN
                {
                    libc::sigaddset(&mut ignored, sig);
                }
            }
            Inherited { mask: old, ignored }
        }
    });
}

/// The state recorded by [`block_all`] (an empty one if it did not run).
pub fn inherited() -> Inherited {
    *INHERITED.get_or_init(|| {
        // SAFETY: empty sets.
        unsafe {
            let mut e: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut e);
            Inherited {
                mask: e,
                ignored: e,
            }
        }
    })
}

/// Put `state` in place in a freshly forked child, between fork and exec: SIG_DFL for every
/// signal (or SIG_IGN for the inherited ignored ones), then the mask.
///
/// # Safety
/// Only async-signal-safe calls; meant for `pre_exec`.
pub unsafe fn apply_in_child(state: SignalState, inherited: &Inherited) {
    let max = libc::SIGRTMAX();
    for sig in 1..=max {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let ign = state == SignalState::Inherit && libc::sigismember(&inherited.ignored, sig) == 1;
        if libc::signal(sig, if ign { libc::SIG_IGN } else { libc::SIG_DFL }) == libc::SIG_ERR
            && !ign
        {
            // glibc refuses its own reserved real-time signals (32, 33), but an ignore set on
            // them is inherited like any other: reset them with the raw system call.
            default_action_raw(sig);
        }
    }
    let mut mask: libc::sigset_t = std::mem::zeroed();
    match state {
        SignalState::Inherit => mask = inherited.mask,
        SignalState::Clean => {
            libc::sigemptyset(&mut mask);
        }
    }
    libc::sigprocmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
}

/// `SIG_DFL` for `sig` through `rt_sigaction` itself (the kernel's `struct sigaction`).
///
/// # Safety
/// One system call; async-signal-safe.
unsafe fn default_action_raw(sig: i32) {
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let act = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    libc::syscall(
        libc::SYS_rt_sigaction,
        sig,
        &act as *const KernelSigaction,
        std::ptr::null_mut::<KernelSigaction>(),
        std::mem::size_of::<u64>(),
    );
}

/// A clean signal state (nothing ignored, nothing blocked) between fork and exec.
///
/// # Safety
/// Only async-signal-safe calls; meant for `pre_exec`.
pub unsafe fn clean_in_child() {
    let none: Inherited = std::mem::zeroed();
    apply_in_child(SignalState::Clean, &none);
}

/// The one signalfd, reading every blocked signal.
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// A non-blocking, close-on-exec signalfd for every catchable signal (which must be
    /// blocked, see [`block_all`]).
    pub fn new() -> io::Result<Self> {
        // SAFETY: a filled sigset and a plain syscall; the fd is owned at once.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let fd = libc::signalfd(-1, &all, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalFd {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// Read the pending signals into `out` (cleared first); an empty `out` means none now.
    pub fn read(&self, out: &mut Vec<Received>) -> io::Result<()> {
        out.clear();
        const N: usize = 16;
        // SAFETY: signalfd_siginfo is plain old data; read fills whole records.
        let mut buf: [libc::signalfd_siginfo; N] = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        loop {
            // SAFETY: buf is valid for N records.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), size * N) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            let records = n as usize / size;
            out.extend(buf[..records].iter().map(|r| Received {
                signo: r.ssi_signo as i32,
                code: r.ssi_code,
                pid: r.ssi_pid,
            }));
            if records < N {
                return Ok(());
            }
        }
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// Wait for one blocked signal (sigtimedwait: one syscall per signal), at most `timeout`
/// (None: for as long as it takes). None when the time passed.
pub fn wait_one(timeout: Option<std::time::Duration>) -> io::Result<Option<Received>> {
    // SAFETY: a filled sigset and a zeroed siginfo the kernel fills.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut info: libc::siginfo_t = std::mem::zeroed();
        loop {
            let r = match timeout {
                None => libc::sigwaitinfo(&all, &mut info),
                Some(t) => {
                    let ts = libc::timespec {
                        tv_sec: t.as_secs() as libc::time_t,
                        tv_nsec: t.subsec_nanos() as libc::c_long,
                    };
                    libc::sigtimedwait(&all, &mut info, &ts)
                }
            };
            if r > 0 {
                return Ok(Some(Received {
                    signo: r,
                    code: info.si_code,
                    pid: info.si_pid() as u32,
                }));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
    }
}

/// A signal's name for messages (`SIGTERM`, `SIGRTMIN+3`).
pub fn name(sig: i32) -> String {
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (min..=max).contains(&sig) {
        let off = sig - min;
        return if off == 0 {
            "SIGRTMIN".into()
        } else {
            format!("SIGRTMIN+{off}")
        };
    }
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
        assert!(catchable(libc::SIGSEGV));
        assert!(!catchable(libc::SIGKILL));
    }
}
