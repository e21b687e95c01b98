//! Process-wide set-up done first thing in `main`, before any thread or allocation of note.

/// Settings of the C library that must precede everything else.
pub fn init() {
    limit_malloc_arenas();
    files_only_nss();
}

/// glibc gives each thread that allocates its own malloc arena (up to 8 per CPU), each
/// keeping its freed memory. The init's extra threads (log writer, blocking pool, copy and
/// compression workers) are few and allocate little, so two arenas serve them without
/// contention worth measuring while keeping idle memory down.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a malloc parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// A statically linked glibc can use only its built-in `files` and `dns` name services:
/// any other module named in nsswitch.conf (`systemd`, `sss`, `myhostname`) would be
/// dlopen()ed with a foreign libc and crash the process on the first lookup that reaches it
/// (an unknown user, for instance). Pin the databases cfy-init uses to the built-in
/// modules, which is what a musl build does anyway.
fn files_only_nss() {
    #[cfg(all(target_env = "gnu", target_feature = "crt-static"))]
    {
        extern "C" {
            fn __nss_configure_lookup(
                db: *const libc::c_char,
                services: *const libc::c_char,
            ) -> libc::c_int;
        }
        for (db, services) in [
            (c"passwd", c"files"),
            (c"group", c"files"),
            (c"initgroups", c"files"),
            (c"hosts", c"files dns"),
        ] {
            // SAFETY: two NUL-terminated static strings; called before any lookup or thread.
            unsafe { __nss_configure_lookup(db.as_ptr(), services.as_ptr()) };
        }
    }
}
