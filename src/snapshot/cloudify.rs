//! Optional Cloudify-level snapshots through the manager's REST API (`/api/v3.1`, basic
//! auth plus the `Tenant` header): create a manager snapshot and download its archive into
//! the archive directory, or upload an archive and restore it. These are logical backups
//! (database dump, resources, certificates), complementary to the store snapshots.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{check_id, CloudifyRest, SnapshotError};

/// How long a manager-side create or restore may run.
const EXECUTION_TIMEOUT: Duration = Duration::from_secs(3600);

pub struct CloudifyClient {
    http: reqwest::Client,
    base: String,
    tenant: String,
    username: String,
    password: String,
    poll: Duration,
}

#[derive(Debug, Deserialize)]
struct Execution {
    id: String,
    status: String,
    #[serde(default)]
    error: Option<String>,
}

fn err(what: &str, e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Remote(format!("cloudify {what}: {e}"))
}

impl CloudifyClient {
    pub fn new(cfg: &CloudifyRest) -> Result<CloudifyClient, SnapshotError> {
        let password = match (&cfg.password, &cfg.password_file) {
            (Some(p), _) => p.expose().to_string(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| SnapshotError::io(f, e))?
                .trim()
                .to_string(),
            (None, None) => {
                return Err(SnapshotError::Other(
                    "snapshot.cloudify needs password or password_file".into(),
                ))
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| err("client", e))?;
        Ok(CloudifyClient {
            http,
            base: format!("{}/api/v3.1", cfg.url.trim_end_matches('/')),
            tenant: cfg.tenant.clone(),
            username: cfg.username.clone(),
            password,
            poll: Duration::from_secs(2),
        })
    }

    /// Poll interval for executions (tests shorten it).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.username, Some(&self.password))
            .header("Tenant", &self.tenant)
    }

    async fn send(
        &self,
        what: &str,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SnapshotError> {
        let resp = rb.send().await.map_err(|e| err(what, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // Cloudify errors are JSON {"message": ..., "error_code": ...}; never echo credentials.
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        Err(err(what, format!("{status}: {}", msg.trim())))
    }

    async fn wait_execution(&self, what: &str, exec: Execution) -> Result<(), SnapshotError> {
        let deadline = tokio::time::Instant::now() + EXECUTION_TIMEOUT;
        let mut exec = exec;
        loop {
            match exec.status.as_str() {
                "terminated" => return Ok(()),
                "failed" | "cancelled" => {
                    return Err(err(
                        what,
                        format!(
                            "execution {} {}: {}",
                            exec.id,
                            exec.status,
                            exec.error.unwrap_or_default()
                        ),
                    ))
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(err(
                    what,
                    format!("execution {} still {}", exec.id, exec.status),
                ));
            }
            tokio::time::sleep(self.poll).await;
            let resp = self
                .send(
                    what,
                    self.req(reqwest::Method::GET, &format!("/executions/{}", exec.id)),
                )
                .await?;
            exec = resp.json().await.map_err(|e| err(what, e))?;
        }
    }

    /// Create manager snapshot `id`, wait for it, download it to `dir/cloudify-<id>.zip`.
    pub async fn create_and_download(
        &self,
        id: &str,
        dir: &Path,
    ) -> Result<PathBuf, SnapshotError> {
        check_id(id)?;
        let body = serde_json::json!({"include_credentials": true, "include_logs": false});
        let resp = self
            .send(
                "create",
                self.req(reqwest::Method::PUT, &format!("/snapshots/{id}"))
                    .json(&body),
            )
            .await?;
        let exec: Execution = resp.json().await.map_err(|e| err("create", e))?;
        self.wait_execution("create", exec).await?;
        let resp = self
            .send(
                "download",
                self.req(reqwest::Method::GET, &format!("/snapshots/{id}/archive")),
            )
            .await?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| SnapshotError::io(dir, e))?;
        let path = dir.join(format!("cloudify-{id}.zip"));
        let tmp = crate::fsutil::staging_name(&path);
        let result = async {
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| SnapshotError::io(&tmp, e))?;
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| err("download", e))?;
                f.write_all(&chunk)
                    .await
                    .map_err(|e| SnapshotError::io(&tmp, e))?;
            }
            f.sync_all().await.map_err(|e| SnapshotError::io(&tmp, e))?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| SnapshotError::io(&path, e))?;
            crate::fsutil::fsync_dir(dir).map_err(|e| SnapshotError::io(dir, e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result.map(|()| path)
    }

    /// Upload `archive` as manager snapshot `id` and restore it (`force`: over a manager
    /// that is not empty), waiting for the restore execution.
    pub async fn upload_and_restore(
        &self,
        id: &str,
        archive: &Path,
        force: bool,
    ) -> Result<(), SnapshotError> {
        check_id(id)?;
        let f = tokio::fs::File::open(archive)
            .await
            .map_err(|e| SnapshotError::io(archive, e))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f));
        self.send(
            "upload",
            self.req(reqwest::Method::PUT, &format!("/snapshots/{id}/archive"))
                .header("Content-Type", "application/octet-stream")
                .body(body),
        )
        .await?;
        let body =
            serde_json::json!({"force": force, "restore_certificates": false, "no_reboot": true});
        let resp = self
            .send(
                "restore",
                self.req(reqwest::Method::POST, &format!("/snapshots/{id}/restore"))
                    .json(&body),
            )
            .await?;
        let exec: Execution = resp.json().await.map_err(|e| err("restore", e))?;
        self.wait_execution("restore", exec).await
    }
}
