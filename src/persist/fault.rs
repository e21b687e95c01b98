//! Deterministic crash injection for the crash tests (debug builds only; release builds
//! compile every point to nothing). `CFY_INIT_FAULT_AT=N` makes the Nth point reached
//! kill the process with SIGKILL, exactly as `kill -9` would; `CFY_INIT_FAULT_COUNT=FILE`
//! makes [`finish`] write how many points a complete run passed, so a test can cover
//! every step boundary.

#[cfg(debug_assertions)]
mod imp {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static PASSED: AtomicU64 = AtomicU64::new(0);

    fn crash_at() -> u64 {
        static AT: OnceLock<u64> = OnceLock::new();
        *AT.get_or_init(|| {
            std::env::var("CFY_INIT_FAULT_AT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        })
    }

    pub fn point(name: &str) {
        let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
        if n == crash_at() {
            tracing::warn!(point = n, name, "fault injection: SIGKILL");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }

    pub fn finish() {
        if let Ok(file) = std::env::var("CFY_INIT_FAULT_COUNT") {
            let _ = std::fs::write(file, PASSED.load(Ordering::SeqCst).to_string());
        }
    }
}

/// A step boundary where the crash tests may kill the process.
#[inline]
pub fn point(_name: &str) {
    #[cfg(debug_assertions)]
    imp::point(_name);
}

/// End of a run: report the number of points passed when asked to.
pub fn finish() {
    #[cfg(debug_assertions)]
    imp::finish();
}
