//! Off-host copies of snapshots in OpenStack Swift (`snapshot.remote`): upload of a local
//! snapshot, listing, and download of a copy for restore, through the `cfy-openstack` crate
//! (credentials shared with cfy-recover, Keystone v3 password or application credential).
//!
//! PID 1 never speaks HTTP to Swift itself. Scheduled uploads run in a child process, a
//! re-exec of this binary (`cfy-init snapshot upload ID --json`): a TLS or HTTP stack panic,
//! an allocation failure or a stuck connection then ends the child, not the init that every
//! service of the container depends on; its memory and threads go away with it, and it can
//! be killed on a timeout. `snapshot create --upload`, `snapshot list --remote` and
//! `restore swift://...` run in the CLI's own process for the same reason.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cfy_openstack::session::Session;
use cfy_openstack::swift::{ObjectInfo, RetryPolicy, Swift, SwiftError, UploadReport};
use serde::{Deserialize, Serialize};

use crate::config::Context;

/// `snapshot.remote`: where off-host copies go. Off when unset.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Name of the cloud in clouds.yaml (searched in `OS_CLIENT_CONFIG_FILE`, `./clouds.yaml`,
    /// `~/.config/openstack/clouds.yaml`, `/etc/openstack/clouds.yaml`). Password and
    /// application-credential auth (Keystone v3).
    pub cloud: String,
    /// A clouds.yaml to read instead of the usual places.
    #[serde(default)]
    pub clouds_file: Option<PathBuf>,
    /// Swift container of the copies (created private when absent); large-object segments go
    /// to `<container>_segments`.
    #[serde(default = "default_container")]
    pub container: String,
    /// Remote copies kept; the oldest are deleted after a good upload (0 = keep all).
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Archives larger than this are uploaded as a static large object in segments of this
    /// size (each checked by its MD5; an interrupted upload resumes after the last one
    /// stored). `1GiB`, `512MiB`, or bytes.
    #[serde(default = "default_segment_size")]
    #[schemars(with = "String")]
    pub segment_size: ByteSize,
    /// How long one request's transient failures (503, 429, other 5xx, lost connections) are
    /// retried, honouring `Retry-After`, before the upload fails.
    #[serde(default = "default_retry_budget", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub retry_budget: Duration,
}

fn default_container() -> String {
    "cfy-manager-snapshots".into()
}
fn default_keep() -> usize {
    7
}
fn default_segment_size() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_retry_budget() -> Duration {
    Duration::from_secs(300)
}

/// `snapshot.schedule`: periodic snapshots taken by cfy-init itself. Off when unset.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Interval between snapshots (`6h`, `30m`). The first is taken one interval after boot.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub every: Duration,
    /// A random delay up to this much is added to each interval, so that many managers do not
    /// snapshot (and upload) at the same moment.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "String")]
    pub jitter: Duration,
    /// Upload each scheduled snapshot when `snapshot.remote` is set.
    #[serde(default = "yes")]
    pub upload: bool,
}

fn yes() -> bool {
    true
}

/// A size in bytes, written as a number or with a unit (`KiB`, `MiB`, `GiB`, `K`, `M`, `G`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("{s:?}: not a size"))?;
        let mul: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" | "k" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "KB" => 1000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            u => return Err(format!("{s:?}: unknown unit {u:?} (KiB, MiB, GiB)")),
        };
        n.checked_mul(mul)
            .filter(|&b| b > 0)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?}: out of range"))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = self.0;
        let text = if b % (1 << 30) == 0 {
            format!("{}GiB", b >> 30)
        } else if b % (1 << 20) == 0 {
            format!("{}MiB", b >> 20)
        } else {
            b.to_string()
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) if n > 0 => Ok(ByteSize(n)),
            Raw::N(_) => Err(serde::de::Error::custom("segment_size must be > 0")),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("snapshot.remote is not set: no remote copies configured")]
    NotConfigured,
    #[error("snapshot.remote: {0}")]
    Creds(#[from] cfy_openstack::creds::CredsError),
    #[error("snapshot.remote: {0}")]
    Auth(#[from] cfy_openstack::session::AuthError),
    #[error(transparent)]
    Swift(#[from] SwiftError),
    #[error(transparent)]
    Snapshot(#[from] super::SnapshotError),
}

/// A Swift client for `snapshot.remote`.
pub fn connect(remote: &RemoteConfig) -> Result<Swift, RemoteError> {
    let creds =
        cfy_openstack::creds::load_cloud(&remote.cloud, remote.clouds_file.as_deref(), &|k| {
            std::env::var(k).ok()
        })?;
    let session = Session::new(creds, Duration::from_secs(60))?;
    Ok(Swift::new(
        Arc::new(session),
        RetryPolicy {
            budget: remote.retry_budget,
            ..RetryPolicy::default()
        },
    )?)
}

fn remote_of(ctx: &Context) -> Result<&RemoteConfig, RemoteError> {
    ctx.config
        .snapshot
        .remote
        .as_ref()
        .ok_or(RemoteError::NotConfigured)
}

/// Where interrupted uploads keep their resume journals.
fn journal_dir(ctx: &Context) -> PathBuf {
    ctx.config.snapshot.archive_dir.join(".remote-journal")
}

/// Upload local snapshot `id` (`<archive_dir>/<id>.tar.zst`, checked against the sha256 of
/// its metadata), then delete remote copies beyond `keep`.
pub async fn upload(ctx: &Context, id: &str) -> Result<UploadReport, RemoteError> {
    let remote = remote_of(ctx)?;
    super::check_id(id)?;
    let dir = &ctx.config.snapshot.archive_dir;
    let meta_path = dir.join(format!("{id}.json"));
    let meta: super::SnapshotMeta = std::fs::read(&meta_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| super::SnapshotError::NotFound(id.to_owned()))?;
    let archive = dir.join(format!("{id}.tar.zst"));
    let swift = connect(remote)?;
    let object = format!("{id}.tar.zst");
    let report = swift
        .upload(
            &archive,
            &remote.container,
            &object,
            remote.segment_size.0,
            &journal_dir(ctx),
            Some(&meta.sha256),
        )
        .await?;
    tracing::info!(
        id,
        container = remote.container,
        bytes = report.bytes,
        segments = report.segments,
        skipped = report.segments_skipped,
        "snapshot copied to Swift"
    );
    for gone in swift.prune(&remote.container, remote.keep).await? {
        tracing::info!(
            object = gone,
            "old remote copy deleted (snapshot.remote.keep)"
        );
    }
    Ok(report)
}

/// The remote copies, oldest first.
pub async fn list(ctx: &Context) -> Result<Vec<ObjectInfo>, RemoteError> {
    let remote = remote_of(ctx)?;
    let swift = connect(remote)?;
    Ok(cfy_openstack::swift::snapshots(
        swift.list(&remote.container).await?,
    ))
}

/// Download `swift://CONTAINER/OBJECT` into `dest` (0600), checked against its sha256.
pub async fn download(
    ctx: &Context,
    container: &str,
    object: &str,
    dest: &Path,
) -> Result<u64, RemoteError> {
    let swift = connect(remote_of(ctx)?)?;
    Ok(swift.download(container, object, dest).await?)
}

/// Upload results as PID 1 saw them (from its upload children), for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct UploadStats {
    pub ok: u64,
    pub failed: u64,
    pub bytes_total: u64,
    pub last_bytes: Option<u64>,
    pub last_duration: Option<Duration>,
    pub last_success: Option<SystemTime>,
}

static STATS: Mutex<UploadStats> = Mutex::new(UploadStats {
    ok: 0,
    failed: 0,
    bytes_total: 0,
    last_bytes: None,
    last_duration: None,
    last_success: None,
});

pub fn stats() -> UploadStats {
    STATS.lock().unwrap().clone()
}

/// How long an upload child may run before it is killed.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Upload snapshot `id` from a child process (see the module comment); `via_reaper` when
/// the supervisor owns `waitpid`. Records the result for `/metrics`.
pub async fn upload_in_child(ctx: &Context, id: &str, via_reaper: bool) -> Result<(), String> {
    let started = std::time::Instant::now();
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if let Some(c) = &ctx.config_path {
        args.push("--config".into());
        args.push(c.into());
    }
    args.push("--root".into());
    args.push(ctx.root.path(Path::new("/")).into());
    for a in ["snapshot", "upload", id, "--json"] {
        args.push(a.into());
    }
    let out = if via_reaper {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(&args);
        crate::pid1::output(&mut cmd, Some(UPLOAD_TIMEOUT)).await
    } else {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(&args).kill_on_drop(true);
        match tokio::time::timeout(UPLOAD_TIMEOUT, cmd.output()).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::other("timed out")),
        }
    };
    let result = match out {
        Err(e) => Err(format!("upload child: {e}")),
        Ok(o) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            Err(format!(
                "upload child failed ({}): {}",
                o.status,
                err.trim().lines().last().unwrap_or("")
            ))
        }
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            let bytes = text
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .and_then(|v| v["bytes"].as_u64())
                .unwrap_or(0);
            Ok(bytes)
        }
    };
    let mut st = STATS.lock().unwrap();
    match result {
        Ok(bytes) => {
            st.ok += 1;
            st.bytes_total += bytes;
            st.last_bytes = Some(bytes);
            st.last_duration = Some(started.elapsed());
            st.last_success = Some(SystemTime::now());
            Ok(())
        }
        Err(e) => {
            st.failed += 1;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(ByteSize::parse("1GiB").unwrap().0, 1 << 30);
        assert_eq!(ByteSize::parse("512MiB").unwrap().0, 512 << 20);
        assert_eq!(ByteSize::parse("1000").unwrap().0, 1000);
        assert!(ByteSize::parse("0").is_err());
        assert!(ByteSize::parse("1TB").is_err());
        let r: RemoteConfig = serde_norway::from_str("cloud: c\nsegment_size: 64MiB\n").unwrap();
        assert_eq!(r.segment_size.0, 64 << 20);
        assert_eq!(r.keep, 7);
        assert_eq!(r.container, "cfy-manager-snapshots");
        assert_eq!(
            serde_json::to_value(r.segment_size).unwrap(),
            serde_json::json!("64MiB")
        );
        assert!(serde_norway::from_str::<RemoteConfig>("cloud: c\nbogus: 1\n").is_err());
        let s: ScheduleConfig = serde_norway::from_str("every: 6h\njitter: 5m\n").unwrap();
        assert!(s.upload && s.every == Duration::from_secs(6 * 3600));
    }
}
