//! Test support: the real Swift of `scripts/openstack/swift.sh` (started here when it is not
//! running; installs its packages on a fresh machine), a clouds.yaml for it, and a lock that
//! serialises the tests that stop and start its servers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cfy_openstack::session::Session;
use cfy_openstack::swift::{RetryPolicy, Swift};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("scripts/openstack/swift.sh").exists())
        .expect("repository root")
        .to_path_buf()
}

fn script(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(repo().join("scripts/openstack/swift.sh"))
        .args(args)
        .output()
        .expect("run swift.sh");
    assert!(
        out.status.success(),
        "swift.sh {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Stop (`kill -9`) or start one Swift server: proxy, object, container, account.
pub fn server(action: &str, name: &str) {
    script(&[action, name]);
}

/// Swift is up; the clouds.yaml that reaches it (cloud `cfy-member`).
pub fn clouds_yaml() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        script(&["up"]);
        let dir = std::env::temp_dir().join(format!("cfy-swift-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("clouds.yaml");
        std::fs::write(&f, script(&["env"])).unwrap();
        f
    })
}

/// Tests that stop servers must not overlap with any other Swift test.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

pub fn session(cloud: &str) -> Arc<Session> {
    let creds =
        cfy_openstack::creds::load_cloud(cloud, Some(clouds_yaml()), &|k| std::env::var(k).ok())
            .unwrap();
    Arc::new(Session::new(creds, Duration::from_secs(30)).unwrap())
}

pub fn swift(budget: Duration) -> Swift {
    Swift::new(
        session("cfy-member"),
        RetryPolicy {
            budget,
            backoff: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
    )
    .unwrap()
}

/// A unique container name for one test.
pub fn container(tag: &str) -> String {
    format!(
        "cfy-test-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A file of `len` pseudo-random bytes.
pub fn random_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let p = dir.join(name);
    let mut data = vec![0u8; len];
    let mut x: u64 = rand::random::<u64>() | 1;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&p, data).unwrap();
    p
}
