//! Shared by the test harnesses that start an init (`pid1.rs`, `services.rs`); each
//! includes it with `#[path = "signals.rs"] mod signals;`.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Signal state as a container runtime gives it: every disposition default and nothing
/// blocked. A test run started under `nohup`, as a background job of a script, or from
/// Python inherits some signals ignored (HUP, INT, QUIT, XFSZ) or blocked (CHLD), and a
/// main command would inherit that through the init (and could not trap them).
pub fn default_signal_dispositions(cmd: &mut Command) {
    // SAFETY: signal() and sigprocmask() are async-signal-safe; only signal state changes
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for sig in 1..=libc::SIGRTMAX() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    // Fails (EINVAL) only for the C library's reserved real-time signals.
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
}
