//! Swift (object store) copies of snapshot archives: streamed upload as a static large object
//! with per-segment MD5 checks and a crash-safe resume journal, streamed download checked
//! against our own sha256, listing, retention and the newest copy for cfy-recover.
//!
//! Every request goes through [`Swift::send`]: 503 / 429 / other 5xx and dropped connections
//! are retried, honouring `Retry-After`, until a time budget is spent; a 401 renews the token.
//! Containers are created without any ACL header, so they and their objects stay private.
//! Memory is bounded whatever the archive size: bodies are streamed in 256 KiB chunks.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use md5::Digest as _;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::session::{AuthError, Session};

/// Object metadata key holding the sha256 of the whole archive (`X-Object-Meta-Sha256`).
pub const META_SHA256: &str = "x-object-meta-sha256";
const CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SwiftError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("swift {method} {path}: HTTP {status}: {message}")]
    Http {
        method: Method,
        path: String,
        status: u16,
        message: String,
    },
    #[error("swift {method} {path}: {reason} (gave up after {waited:?} of retries)")]
    Transport {
        method: Method,
        path: String,
        reason: String,
        waited: Duration,
    },
    #[error("swift {path}: segment {n} stored with MD5 {got}, sent {want}")]
    SegmentChecksum {
        path: String,
        n: usize,
        want: String,
        got: String,
    },
    #[error("{container}/{object}: downloaded bytes have sha256 {got}, the copy was uploaded with {want}: refused")]
    Checksum {
        container: String,
        object: String,
        want: String,
        got: String,
    },
    #[error("{container}/{object}: no {META_SHA256} metadata: not a cfy-init snapshot copy")]
    NoChecksum { container: String, object: String },
    #[error("{}: {reason}", path.display())]
    Local { path: PathBuf, reason: String },
}

impl SwiftError {
    pub fn status(&self) -> Option<u16> {
        match self {
            SwiftError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How long transient failures are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total time spent waiting between attempts of one request before giving up.
    pub budget: Duration,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured (a longer one is capped to this).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            budget: Duration::from_secs(300),
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(15),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// One object of a container listing.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ObjectInfo {
    pub name: String,
    pub bytes: u64,
    #[serde(default)]
    pub last_modified: String,
    #[serde(default)]
    pub hash: String,
}

/// What an upload did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UploadReport {
    pub bytes: u64,
    pub segments: usize,
    /// Segments found complete from an earlier, interrupted upload and not sent again.
    pub segments_skipped: usize,
    /// Bytes actually sent (retries included).
    pub bytes_sent: u64,
    pub sha256: String,
}

/// The resume journal of one segmented upload (`<object>.upload.json` in the journal dir).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Journal {
    container: String,
    object: String,
    size: u64,
    mtime_ns: i128,
    segment_size: u64,
    /// Finished segments: index → MD5 hex (as Swift's ETag).
    done: Vec<(usize, String)>,
}

/// A Swift account reached through a Keystone [`Session`].
pub struct Swift {
    session: Arc<Session>,
    http: reqwest::Client,
    pub policy: RetryPolicy,
    /// Requests retried so far (busy, unreachable or refused token), for logs and tests.
    retries: std::sync::atomic::AtomicU64,
}

enum Body {
    Empty,
    Bytes(bytes::Bytes),
    /// `len` bytes of `path` from `offset`, hashed (MD5) into the cell as they are sent.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
        md5: Arc<Mutex<md5::Md5>>,
    },
}

impl Swift {
    pub fn new(session: Arc<Session>, policy: RetryPolicy) -> Result<Swift, SwiftError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| SwiftError::Transport {
                method: Method::GET,
                path: String::new(),
                reason: e.to_string(),
                waited: Duration::ZERO,
            })?;
        Ok(Swift {
            session,
            http,
            policy,
            retries: Default::default(),
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Requests retried so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One request, retried per [`RetryPolicy`]; 401 renews the token (twice at most).
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: &Body,
    ) -> Result<reqwest::Response, SwiftError> {
        let started = Instant::now();
        let mut waited = Duration::ZERO;
        let mut attempt = 0u32;
        let mut reauths = 0;
        loop {
            let token = self.session.token().await?;
            let base = self
                .session
                .endpoint(&["object-store"], "object-store")
                .await?;
            let mut req = self
                .http
                .request(method.clone(), format!("{base}/{path}"))
                .header("X-Auth-Token", token.value.expose());
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            req = match body {
                Body::Empty => req,
                Body::Bytes(b) => req.body(b.clone()),
                Body::File {
                    path: p,
                    offset,
                    len,
                    md5,
                } => {
                    *md5.lock().unwrap() = md5::Md5::new();
                    req.header("Content-Length", len.to_string())
                        .body(file_body(p, *offset, *len, md5.clone()).await?)
                }
            };
            let outcome = req.send().await;
            let delay = match &outcome {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && reauths < 2 => {
                    reauths += 1;
                    self.session.invalidate(&token).await;
                    continue;
                }
                Ok(r) if retryable(r.status()) => Some(
                    retry_after(r)
                        .map(|d| d.min(self.policy.max_retry_after))
                        .unwrap_or_else(|| self.delay(attempt)),
                ),
                Ok(_) => None,
                Err(_) => Some(self.delay(attempt)),
            };
            let Some(delay) = delay else {
                return Ok(outcome.expect("Ok above"));
            };
            if waited + delay > self.policy.budget {
                return match outcome {
                    Ok(r) => Err(http_error(&method, path, r).await),
                    Err(e) => Err(SwiftError::Transport {
                        method,
                        path: path.to_owned(),
                        reason: describe(&e),
                        waited: started.elapsed(),
                    }),
                };
            }
            match &outcome {
                Ok(r) => {
                    tracing::warn!(%method, path, status = r.status().as_u16(), retry_in = ?delay, "swift busy, retrying")
                }
                Err(e) => {
                    tracing::warn!(%method, path, error = %describe(e), retry_in = ?delay, "swift unreachable, retrying")
                }
            }
            self.retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            waited += delay;
            attempt += 1;
        }
    }

    fn delay(&self, n: u32) -> Duration {
        let base = self
            .policy
            .backoff
            .saturating_mul(1 << n.min(10))
            .min(self.policy.max_backoff);
        base.mul_f64(1.0 + rand::random::<f64>() * 0.25)
    }

    /// [`Swift::send`], then any non-2xx status is an error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: &Body,
    ) -> Result<reqwest::Response, SwiftError> {
        let r = self.send(method.clone(), path, headers, body).await?;
        if r.status().is_success() {
            Ok(r)
        } else {
            Err(http_error(&method, path, r).await)
        }
    }

    /// Create `container` when absent, private (no `X-Container-Read` / `-Write`).
    pub async fn ensure_container(&self, container: &str) -> Result<(), SwiftError> {
        let p = enc(container);
        match self.call(Method::HEAD, &p, &[], &Body::Empty).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => {
                self.call(Method::PUT, &p, &[], &Body::Empty).await?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Every object of `container` (paged), sorted by name; a missing container is empty.
    pub async fn list(&self, container: &str) -> Result<Vec<ObjectInfo>, SwiftError> {
        let mut out: Vec<ObjectInfo> = Vec::new();
        loop {
            let mut path = format!("{}?format=json&limit=10000", enc(container));
            if let Some(last) = out.last() {
                path.push_str(&format!("&marker={}", enc(&last.name)));
            }
            let r = match self.call(Method::GET, &path, &[], &Body::Empty).await {
                Ok(r) => r,
                Err(e) if e.status() == Some(404) => return Ok(out),
                Err(e) => return Err(e),
            };
            let page: Vec<ObjectInfo> = r.json().await.map_err(|e| SwiftError::Http {
                method: Method::GET,
                path: path.clone(),
                status: 200,
                message: format!("cannot decode the listing: {e}"),
            })?;
            let n = page.len();
            out.extend(page);
            if n < 10000 {
                return Ok(out);
            }
        }
    }

    /// HEAD of an object: its headers, or `None` when absent.
    pub async fn head(
        &self,
        container: &str,
        object: &str,
    ) -> Result<Option<reqwest::header::HeaderMap>, SwiftError> {
        let p = format!("{}/{}", enc(container), enc(object));
        match self.call(Method::HEAD, &p, &[], &Body::Empty).await {
            Ok(r) => Ok(Some(r.headers().clone())),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// HEAD of a container (its ACLs and counts), or `None` when absent.
    pub async fn head_container(
        &self,
        container: &str,
    ) -> Result<Option<reqwest::header::HeaderMap>, SwiftError> {
        match self
            .call(Method::HEAD, &enc(container), &[], &Body::Empty)
            .await
        {
            Ok(r) => Ok(Some(r.headers().clone())),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Delete an object and, for a large object, its segments.
    pub async fn delete(&self, container: &str, object: &str) -> Result<(), SwiftError> {
        let p = format!("{}/{}", enc(container), enc(object));
        let slo = self
            .head(container, object)
            .await?
            .is_some_and(|h| h.contains_key("x-static-large-object"));
        let p = if slo {
            format!("{p}?multipart-manifest=delete")
        } else {
            p
        };
        match self.call(Method::DELETE, &p, &[], &Body::Empty).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Upload the file `src` as `container/object`: one PUT up to `segment_size`, else a
    /// static large object whose segments go to `<container>_segments`. `journal_dir` holds
    /// the resume journal: an upload cut short (crash, kill, network) and started again
    /// with the same file sends only the segments that are not already stored intact.
    /// `expect_sha256`, when given, must be the file's sha256 (checked while sending).
    pub async fn upload(
        &self,
        src: &Path,
        container: &str,
        object: &str,
        segment_size: u64,
        journal_dir: &Path,
        expect_sha256: Option<&str>,
    ) -> Result<UploadReport, SwiftError> {
        let local = |reason: String| SwiftError::Local {
            path: src.to_owned(),
            reason,
        };
        let meta = std::fs::metadata(src).map_err(|e| local(e.to_string()))?;
        let size = meta.len();
        let mtime_ns = mtime_ns(&meta);
        let segment_size = segment_size.max(1);
        self.ensure_container(container).await?;
        let mut report = UploadReport {
            bytes: size,
            ..Default::default()
        };
        let mut sha = Sha256::new();
        let obj_path = format!("{}/{}", enc(container), enc(object));

        if size <= segment_size {
            let md5 = Arc::new(Mutex::new(md5::Md5::new()));
            let sum = sha256_file(src, 0, size, &mut sha).await?;
            check_expected(src, expect_sha256, &sum)?;
            let body = Body::File {
                path: src.to_owned(),
                offset: 0,
                len: size,
                md5: md5.clone(),
            };
            let headers = [(META_SHA256, sum.clone())];
            let etag = self
                .put_checked(&obj_path, &headers, &body, &md5, 0)
                .await?;
            let _ = etag;
            report.segments = 1;
            report.bytes_sent = size;
            report.sha256 = sum;
            return Ok(report);
        }

        let seg_container = format!("{container}_segments");
        self.ensure_container(&seg_container).await?;
        std::fs::create_dir_all(journal_dir).map_err(|e| SwiftError::Local {
            path: journal_dir.to_owned(),
            reason: e.to_string(),
        })?;
        let jpath = journal_path(journal_dir, object);
        let fresh = Journal {
            container: container.to_owned(),
            object: object.to_owned(),
            size,
            mtime_ns,
            segment_size,
            done: Vec::new(),
        };
        let mut journal = match read_journal(&jpath) {
            Some(j)
                if Journal {
                    done: vec![],
                    ..j.clone()
                } == fresh =>
            {
                tracing::info!(
                    object,
                    finished = j.done.len(),
                    "resuming an interrupted upload"
                );
                j
            }
            _ => fresh,
        };
        let count = size.div_ceil(segment_size) as usize;
        let mut manifest = Vec::with_capacity(count);
        for n in 0..count {
            let offset = n as u64 * segment_size;
            let len = segment_size.min(size - offset);
            let seg_name = format!("{object}/slo/{size}/{segment_size}/{n:08}");
            let seg_path = format!("{}/{}", enc(&seg_container), enc(&seg_name));
            let known = journal
                .done
                .iter()
                .find(|(i, _)| *i == n)
                .map(|x| x.1.clone());
            let mut etag = None;
            if let Some(want) = known {
                // Stored by the interrupted run: keep it when Swift still has it intact and
                // the local bytes are the same (read locally, not sent).
                let stored = self.head(&seg_container, &seg_name).await?;
                let intact = stored.as_ref().is_some_and(|h| {
                    header(h, "etag").trim_matches('"') == want
                        && header(h, "content-length") == len.to_string()
                });
                if intact {
                    let mut seg_sha = sha.clone();
                    let md5 = md5_sha_file(src, offset, len, &mut seg_sha).await?;
                    if md5 == want {
                        sha = seg_sha;
                        report.segments_skipped += 1;
                        etag = Some(want);
                    }
                }
            }
            let etag = match etag {
                Some(e) => e,
                None => {
                    let md5 = Arc::new(Mutex::new(md5::Md5::new()));
                    let body = Body::File {
                        path: src.to_owned(),
                        offset,
                        len,
                        md5: md5.clone(),
                    };
                    let e = self.put_checked(&seg_path, &[], &body, &md5, n).await?;
                    // The sha256 of the whole file follows the bytes in order, read again
                    // locally (page cache) rather than kept from a send that may be retried.
                    sha256_file(src, offset, len, &mut sha).await?;
                    report.bytes_sent += len;
                    journal.done.push((n, e.clone()));
                    write_journal(&jpath, &journal)?;
                    e
                }
            };
            manifest.push(serde_json::json!({
                "path": format!("/{seg_container}/{seg_name}"),
                "etag": etag,
                "size_bytes": len,
            }));
        }
        let sum = hex::encode(sha.finalize());
        check_expected(src, expect_sha256, &sum)?;
        let body = Body::Bytes(serde_json::to_vec(&manifest).expect("json").into());
        self.call(
            Method::PUT,
            &format!("{obj_path}?multipart-manifest=put"),
            &[
                (META_SHA256, sum.clone()),
                ("Content-Type", "application/zstd".into()),
            ],
            &body,
        )
        .await?;
        let _ = std::fs::remove_file(&jpath);
        report.segments = count;
        report.sha256 = sum;
        Ok(report)
    }

    /// PUT a file body and check that Swift stored what was sent (its ETag is the MD5).
    async fn put_checked(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: &Body,
        md5: &Arc<Mutex<md5::Md5>>,
        n: usize,
    ) -> Result<String, SwiftError> {
        for attempt in 0..3 {
            let r = self.call(Method::PUT, path, headers, body).await?;
            let got = header(r.headers(), "etag").trim_matches('"').to_owned();
            let want = hex::encode(md5.lock().unwrap().clone().finalize());
            if got == want {
                return Ok(got);
            }
            if attempt == 2 {
                return Err(SwiftError::SegmentChecksum {
                    path: path.to_owned(),
                    n,
                    want,
                    got,
                });
            }
            tracing::warn!(
                path,
                want,
                got,
                "segment stored with another MD5: sending it again"
            );
        }
        unreachable!()
    }

    /// Download `container/object` into `dest` (created 0600, replaced), checking the bytes
    /// against the sha256 stored at upload; on a mismatch `dest` is removed and the copy
    /// refused. A connection lost mid-way is resumed with a `Range` request.
    pub async fn download(
        &self,
        container: &str,
        object: &str,
        dest: &Path,
    ) -> Result<u64, SwiftError> {
        let local = |reason: String| SwiftError::Local {
            path: dest.to_owned(),
            reason,
        };
        let path = format!("{}/{}", enc(container), enc(object));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dest)
            .await
            .map_err(|e| local(e.to_string()))?;
        let mut sha = Sha256::new();
        let mut got: u64 = 0;
        let mut want: Option<String> = None;
        let mut total: Option<u64> = None;
        let result: Result<(), SwiftError> = async {
            loop {
                let range = if got > 0 {
                    vec![("Range", format!("bytes={got}-"))]
                } else {
                    vec![]
                };
                let r = self.call(Method::GET, &path, &range, &Body::Empty).await?;
                if want.is_none() {
                    let w = header(r.headers(), META_SHA256);
                    if w.is_empty() {
                        return Err(SwiftError::NoChecksum {
                            container: container.into(),
                            object: object.into(),
                        });
                    }
                    want = Some(w);
                    total = r.content_length();
                }
                let mut stream = r.bytes_stream();
                let mut cut = false;
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(c) => {
                            sha.update(&c);
                            got += c.len() as u64;
                            file.write_all(&c).await.map_err(|e| local(e.to_string()))?;
                        }
                        Err(e) => {
                            tracing::warn!(object, at = got, error = %describe(&e), "download cut: resuming");
                            cut = true;
                            break;
                        }
                    }
                }
                if !cut || total.is_some_and(|t| got >= t) {
                    return Ok(());
                }
            }
        }
        .await;
        let finish = async {
            result?;
            file.sync_all().await.map_err(|e| local(e.to_string()))?;
            let sum = hex::encode(sha.finalize());
            let want = want.unwrap_or_default();
            if sum != want {
                return Err(SwiftError::Checksum {
                    container: container.into(),
                    object: object.into(),
                    want,
                    got: sum,
                });
            }
            Ok(got)
        };
        match finish.await {
            Ok(n) => Ok(n),
            Err(e) => {
                let _ = std::fs::remove_file(dest);
                Err(e)
            }
        }
    }

    /// Keep the newest `keep` snapshot copies (`*.tar.zst`) of `container`, deleting the
    /// others with their segments (0 = keep all). Returns the names deleted.
    pub async fn prune(&self, container: &str, keep: usize) -> Result<Vec<String>, SwiftError> {
        if keep == 0 {
            return Ok(vec![]);
        }
        let mut copies = snapshots(self.list(container).await?);
        let mut deleted = Vec::new();
        while copies.len() > keep {
            let oldest = copies.remove(0);
            self.delete(container, &oldest.name).await?;
            deleted.push(oldest.name);
        }
        Ok(deleted)
    }

    /// The newest snapshot copy in `container` (by upload time, then name), if any.
    pub async fn newest_snapshot(&self, container: &str) -> Result<Option<ObjectInfo>, SwiftError> {
        Ok(snapshots(self.list(container).await?).pop())
    }
}

/// Where [`Swift::upload`] keeps the resume journal of `object`.
pub fn journal_path(journal_dir: &Path, object: &str) -> PathBuf {
    journal_dir.join(format!("{}.upload.json", object.replace('/', "_")))
}

/// Segments recorded as finished in a resume journal (0 when there is none).
pub fn journal_segments_done(path: &Path) -> usize {
    read_journal(path).map(|j| j.done.len()).unwrap_or(0)
}

/// The snapshot copies of a listing, oldest first.
pub fn snapshots(list: Vec<ObjectInfo>) -> Vec<ObjectInfo> {
    let mut v: Vec<ObjectInfo> = list
        .into_iter()
        .filter(|o| o.name.ends_with(".tar.zst") && !o.name.contains('/'))
        .collect();
    v.sort_by(|a, b| (&a.last_modified, &a.name).cmp(&(&b.last_modified, &b.name)));
    v
}

/// `swift://CONTAINER/OBJECT` → (container, object).
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("swift://")?;
    let (c, o) = rest.split_once('/')?;
    (!c.is_empty() && !o.is_empty()).then(|| (c.to_owned(), o.to_owned()))
}

use std::os::unix::fs::OpenOptionsExt as _;

fn check_expected(src: &Path, expect: Option<&str>, got: &str) -> Result<(), SwiftError> {
    match expect {
        Some(w) if w != got => Err(SwiftError::Local {
            path: src.to_owned(),
            reason: format!("the archive's sha256 is {got}, its metadata says {w}: it changed or is damaged; not uploaded"),
        }),
        _ => Ok(()),
    }
}

fn retryable(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || (s.is_server_error() && s != StatusCode::NOT_IMPLEMENTED)
}

/// `Retry-After` in seconds (the HTTP-date form is taken as "soon").
fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    let v = r.headers().get("retry-after")?.to_str().ok()?;
    Some(
        v.trim()
            .parse::<f64>()
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(1)),
    )
}

async fn http_error(method: &Method, path: &str, r: reqwest::Response) -> SwiftError {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    SwiftError::Http {
        method: method.clone(),
        path: path.to_owned(),
        status,
        message: crate::error_message(&text),
    }
}

fn header(h: &reqwest::header::HeaderMap, k: &str) -> String {
    h.get(k)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Percent-encode a path segment (object names keep their `/`).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

async fn open_at(path: &Path, offset: u64) -> Result<tokio::fs::File, SwiftError> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| SwiftError::Local {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    f.seek(SeekFrom::Start(offset))
        .await
        .map_err(|e| SwiftError::Local {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(f)
}

/// A streamed request body: `len` bytes of `path` from `offset`, hashed as they go.
async fn file_body(
    path: &Path,
    offset: u64,
    len: u64,
    md5: Arc<Mutex<md5::Md5>>,
) -> Result<reqwest::Body, SwiftError> {
    let f = open_at(path, offset).await?.take(len);
    let stream = tokio_util::io::ReaderStream::with_capacity(f, CHUNK).map(move |c| {
        if let Ok(b) = &c {
            md5.lock().unwrap().update(b);
        }
        c
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// Feed `len` bytes of `path` from `offset` into `sha`; returns the hex of the whole file
/// when the range is the whole file (used for single-PUT uploads).
async fn sha256_file(
    path: &Path,
    offset: u64,
    len: u64,
    sha: &mut Sha256,
) -> Result<String, SwiftError> {
    md5_sha_file(path, offset, len, sha).await?;
    Ok(hex::encode(sha.clone().finalize()))
}

/// MD5 of the range, also fed into `sha`.
async fn md5_sha_file(
    path: &Path,
    offset: u64,
    len: u64,
    sha: &mut Sha256,
) -> Result<String, SwiftError> {
    let mut f = open_at(path, offset).await?.take(len);
    let mut md5 = md5::Md5::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).await.map_err(|e| SwiftError::Local {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
    }
    Ok(hex::encode(md5.finalize()))
}

fn read_journal(path: &Path) -> Option<Journal> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Crash-safe: a temporary file, fsync, rename over the journal, fsync of the directory.
fn write_journal(path: &Path, j: &Journal) -> Result<(), SwiftError> {
    use std::io::Write;
    let err = |e: std::io::Error| SwiftError::Local {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&serde_json::to_vec(j).expect("json"))
        .map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_listing_order() {
        assert_eq!(
            parse_url("swift://c/a.tar.zst"),
            Some(("c".into(), "a.tar.zst".into()))
        );
        assert_eq!(parse_url("swift://c/"), None);
        assert_eq!(parse_url("/tmp/x"), None);
        let o = |n: &str, t: &str| ObjectInfo {
            name: n.into(),
            bytes: 1,
            last_modified: t.into(),
            hash: String::new(),
        };
        let v = snapshots(vec![
            o("b.tar.zst", "2026-01-02"),
            o("a.tar.zst", "2026-01-03"),
            o("notes.txt", "2026-01-09"),
        ]);
        let names: Vec<_> = v.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["b.tar.zst", "a.tar.zst"]);
        assert_eq!(enc("a b/c%"), "a%20b/c%25");
    }

    #[test]
    fn journal_round_trip_is_crash_safe_shaped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.upload.json");
        let j = Journal {
            container: "c".into(),
            object: "o".into(),
            size: 10,
            mtime_ns: 5,
            segment_size: 4,
            done: vec![(0, "abc".into())],
        };
        write_journal(&p, &j).unwrap();
        assert_eq!(read_journal(&p), Some(j));
        assert!(!p.with_extension("json.tmp").exists());
    }
}
