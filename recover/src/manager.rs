//! The manager side: cfy-init's hooks API over TCP (health, readiness, snapshot download,
//! restore upload with a bearer token) and local verification of snapshot archives.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("manager at {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{}: cannot read the token file: {reason} (check --manager-token-file)", path.display())]
    Token { path: PathBuf, reason: String },
    #[error("{}: not a usable snapshot archive: {reason}", path.display())]
    Archive { path: PathBuf, reason: String },
    #[error("manager at {url} not ready after {waited:?}: {last}")]
    NotReady {
        url: String,
        waited: Duration,
        last: String,
    },
}

/// A client of one manager's hooks API.
#[derive(Clone)]
pub struct Manager {
    pub url: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Manager {
    /// `url` like `http://10.0.0.5:8090`; the token is read from `token_file` when given.
    pub fn new(url: &str, token_file: Option<&Path>) -> Result<Manager, ManagerError> {
        let token = match token_file {
            None => None,
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| ManagerError::Token {
                        path: p.to_path_buf(),
                        reason: e.to_string(),
                    })?
                    .trim()
                    .to_owned(),
            ),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| ManagerError::Http {
                url: url.into(),
                reason: e.to_string(),
            })?;
        Ok(Manager {
            url: url.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    fn err(&self, reason: impl std::fmt::Display) -> ManagerError {
        ManagerError::Http {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.url));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// True when `GET path` answers 200 within `timeout`.
    async fn probe(&self, path: &str, timeout: Duration) -> Result<(), String> {
        let r = self
            .req(reqwest::Method::GET, path)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("{path} answered HTTP {}", r.status().as_u16()))
        }
    }

    /// `/healthz` within `timeout`, or why not (the watcher logs the reason).
    pub async fn healthy(&self, timeout: Duration) -> Result<(), String> {
        self.probe("/healthz", timeout).await
    }

    /// Does the manager still answer at all?
    pub async fn alive(&self) -> bool {
        self.probe("/healthz", Duration::from_secs(3)).await.is_ok()
    }

    /// Poll `/readyz` until 200 or `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ManagerError> {
        let start = Instant::now();
        loop {
            let last = match self.probe("/readyz", Duration::from_secs(5)).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if start.elapsed() >= timeout {
                return Err(ManagerError::NotReady {
                    url: self.url.clone(),
                    waited: timeout,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Send what `make` builds. While the manager answers 409 (another snapshot or restore
    /// runs, e.g. one that a killed earlier run of this tool started) wait and send again,
    /// until `timeout`. Returns the last answer's status and JSON body.
    async fn send_when_free(
        &self,
        what: &str,
        timeout: Duration,
        mut make: impl FnMut() -> Result<reqwest::RequestBuilder, ManagerError>,
    ) -> Result<(reqwest::StatusCode, serde_json::Value), ManagerError> {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed()).max(BUSY_RETRY);
            let r = make()?
                .timeout(left)
                .send()
                .await
                .map_err(|e| self.err(format!("{what}: {e}")))?;
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            if status == reqwest::StatusCode::CONFLICT && start.elapsed() + BUSY_RETRY < timeout {
                tracing::info!(
                    "{what}: the manager is busy with another snapshot or restore; waiting"
                );
                tokio::time::sleep(BUSY_RETRY).await;
                continue;
            }
            return Ok((status, body));
        }
    }

    /// Take a snapshot (`POST /snapshots?wait=true`) and download its archive to `dest`
    /// (staged, fsynced, renamed). Returns the sha256 the manager reports.
    pub async fn take_snapshot(
        &self,
        dest: &Path,
        timeout: Duration,
    ) -> Result<String, ManagerError> {
        let (status, body) = self
            .send_when_free("POST /snapshots", timeout, || {
                Ok(self.req(reqwest::Method::POST, "/snapshots?wait=true"))
            })
            .await?;
        if !status.is_success() {
            return Err(self.err(format!(
                "POST /snapshots: HTTP {}: {}",
                status.as_u16(),
                body["error"].as_str().unwrap_or("")
            )));
        }
        let id = body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.err(format!("POST /snapshots: no id in {body}")))?;
        self.download(&id, dest, timeout).await?;
        Ok(body["sha256"].as_str().unwrap_or("").to_owned())
    }

    async fn download(&self, id: &str, dest: &Path, timeout: Duration) -> Result<(), ManagerError> {
        use futures_util::StreamExt;
        use std::io::Write;
        let r = self
            .req(reqwest::Method::GET, &format!("/snapshots/{id}/archive"))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.err(e))?;
        if !r.status().is_success() {
            return Err(self.err(format!("GET archive: HTTP {}", r.status().as_u16())));
        }
        let tmp = cfy_init::fsutil::staging_name(dest);
        let io = |e: std::io::Error| self.err(format!("{}: {e}", dest.display()));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        let mut stream = r.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                self.err(format!("download interrupted: {e}"))
            })?;
            f.write_all(&chunk).map_err(io)?;
        }
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, dest).map_err(io)?;
        cfy_init::fsutil::fsync_dir(cfy_init::fsutil::parent_of(dest)).map_err(io)
    }

    /// Upload `archive` to `POST /restore?wait=true` (streamed, with its sha256 so the
    /// manager checks the transfer) and wait for the restore to finish.
    pub async fn restore(
        &self,
        archive: &Path,
        sha256: &str,
        timeout: Duration,
    ) -> Result<(), ManagerError> {
        let (status, doc) = self
            .send_when_free("POST /restore", timeout, || {
                let file = std::fs::File::open(archive)
                    .map_err(|e| self.err(format!("{}: {e}", archive.display())))?;
                let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                let file = tokio::fs::File::from_std(file);
                let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
                Ok(self
                    .req(reqwest::Method::POST, "/restore?wait=true")
                    .header("Content-Type", "application/zstd")
                    .header("Content-Length", len)
                    .header("X-Archive-Sha256", sha256)
                    .body(body))
            })
            .await?;
        if !status.is_success() {
            return Err(self.err(format!(
                "POST /restore: HTTP {}: {}",
                status.as_u16(),
                doc["error"].as_str().unwrap_or("")
            )));
        }
        Ok(())
    }
}

/// How long to wait before asking a busy manager again.
const BUSY_RETRY: Duration = Duration::from_millis(500);

/// What verification found in an archive.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ArchiveInfo {
    pub sha256: String,
    pub bytes: u64,
    pub entries: u64,
}

/// Verify an archive exactly as cfy-init's restore will (manifest, every member's path,
/// type, size and checksum, the whole file's sha256) by extracting it into a scratch
/// directory next to `scratch_in`, which is removed afterwards.
pub fn verify_archive(path: &Path, scratch_in: &Path) -> Result<ArchiveInfo, ManagerError> {
    let bad = |reason: String| ManagerError::Archive {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::metadata(path)
        .map_err(|e| bad(e.to_string()))?
        .len();
    std::fs::create_dir_all(scratch_in).map_err(|e| bad(e.to_string()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".verify-")
        .tempdir_in(scratch_in)
        .map_err(|e| bad(format!("{}: {e}", scratch_in.display())))?;
    let limits = cfy_init::snapshot::Limits::default();
    let progress = std::sync::atomic::AtomicU64::new(0);
    let verified = cfy_init::snapshot::verify::extract_verified(
        path,
        &scratch.path().join("x"),
        &limits,
        None,
        &progress,
    )
    .map_err(|e| bad(e.to_string()))?;
    Ok(ArchiveInfo {
        sha256: verified.sha256,
        bytes,
        entries: verified.entries as u64,
    })
}

/// sha256 of a file, for re-checking a recorded archive on resume.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}
