//! Shared by the test harnesses that start an init (`pid1.rs`, `services.rs`); each
//! includes it with `#[path = "signals.rs"] mod signals;`.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Signal dispositions as a container runtime gives them: a test run started under `nohup`
/// or as a background job of a script inherits SIGHUP, SIGINT and SIGQUIT ignored, and a
/// main command would inherit that through the init (and could not trap them).
pub fn default_signal_dispositions(cmd: &mut Command) {
    // SAFETY: signal() is async-signal-safe; only dispositions change between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGPIPE] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
}
