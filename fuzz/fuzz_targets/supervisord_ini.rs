//! supervisord.conf as cfy-init reads it (Python's INI dialect, then programs → specs,
//! `%(ENV_X)s` expansion, command splitting, the socket section): an error naming the file
//! for anything wrong, never a panic. The file lives in a temp root, so `[include]` globs
//! only ever match inside it.
#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use cfy_init::config::Root;
use cfy_init::supervisord::conf;
use libfuzzer_sys::fuzz_target;

fn root() -> &'static (tempfile::TempDir, PathBuf) {
    static ROOT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("etc")).expect("etc");
        let conf = dir.path().join("etc/supervisord.conf");
        (dir, conf)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative include globs may climb out with `..` and walk the whole file system:
    // legitimate (supervisord does the same), but a fuzzing timeout, not a finding.
    if text.contains("..") {
        return;
    }
    let (dir, conf) = root();
    std::fs::write(conf, text).expect("write conf");
    let _ = conf::read(conf, &Root::new(dir.path()), &BTreeMap::new());
});
