//! `cfy-init status|ready|snapshot|restore`: a small client of the control API.
//!
//! Talks HTTP/1.1 over the unix socket the running init wrote to its runtime file
//! ([`runtime::RUNTIME_FILE`]), so a config file changed or broken since the init started
//! does not matter; without that file (or when its socket does not answer) over
//! `hooks.socket` from the config; with
//! `CFY_INIT_HOOKS_URL=http://host:port` it uses TCP and sends the bearer token read from
//! `CFY_INIT_HOOKS_TOKEN_FILE`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::cli::SnapshotCmd;
use crate::config::{Config, Context, Root};
use crate::hooks::runtime;

/// Environment variable selecting TCP instead of the unix socket.
pub const URL_ENV: &str = "CFY_INIT_HOOKS_URL";
/// Environment variable naming the bearer-token file for TCP.
pub const TOKEN_FILE_ENV: &str = "CFY_INIT_HOOKS_TOKEN_FILE";

enum Target {
    Unix(PathBuf),
    Tcp {
        authority: String,
        token: Option<String>,
    },
}

impl Target {
    fn new(socket: &Path) -> anyhow::Result<Target> {
        let Ok(url) = std::env::var(URL_ENV) else {
            return Ok(Target::Unix(socket.to_path_buf()));
        };
        let authority = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("{URL_ENV}={url}: only http://host:port URLs are supported"))?
            .trim_end_matches('/')
            .to_string();
        let token = match std::env::var(TOKEN_FILE_ENV) {
            Ok(f) => Some(
                std::fs::read_to_string(&f)
                    .with_context(|| format!("{f}: cannot read the token ({TOKEN_FILE_ENV})"))?
                    .trim()
                    .to_string(),
            ),
            Err(_) => None,
        };
        Ok(Target::Tcp { authority, token })
    }
}

/// The control socket to talk to: the running init's (from its runtime file) when it
/// answers, else `hooks.socket` of the config `load` reads. A config that fails to load
/// only matters when the runtime file names no socket.
pub fn control_socket(
    root: &Root,
    load: impl FnOnce() -> Result<Config, crate::config::ConfigError>,
) -> anyhow::Result<PathBuf> {
    let from_runtime = runtime::read(root).and_then(|i| i.socket);
    if let Some(sock) = &from_runtime {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return Ok(sock.clone());
        }
    }
    match load() {
        Ok(config) => Ok(config.hooks.socket),
        Err(e) => match from_runtime {
            // Not answering and no config to say otherwise: report on that socket.
            Some(sock) => Ok(sock),
            None => Err(e.into()),
        },
    }
}

struct Reply {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: hyper::body::Incoming,
}

impl Reply {
    async fn json(self) -> anyhow::Result<Value> {
        let bytes = self
            .body
            .collect()
            .await
            .context("reading the reply")?
            .to_bytes();
        serde_json::from_slice(&bytes).context("the reply is not JSON")
    }

    /// The reply's JSON, or an error carrying the server's message.
    async fn ok_json(self) -> anyhow::Result<Value> {
        let status = self.status;
        let v = self.json().await?;
        if !status.is_success() {
            bail!(
                "{}: {}",
                status,
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("request failed")
            );
        }
        Ok(v)
    }
}

async fn call(
    target: &Target,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Body,
) -> anyhow::Result<Reply> {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header(hyper::header::CONTENT_TYPE, ct);
    }
    let (req, sender) = match target {
        Target::Unix(sock) => {
            let stream = tokio::net::UnixStream::connect(sock).await.with_context(|| {
                format!(
                    "{}: cannot connect to the control socket (is cfy-init running? see hooks.socket)",
                    sock.display()
                )
            })?;
            let req = req.header(hyper::header::HOST, "localhost");
            (req, handshake(TokioIo::new(stream)).await?)
        }
        Target::Tcp { authority, token } => {
            let stream = tokio::net::TcpStream::connect(authority.as_str())
                .await
                .with_context(|| format!("{authority}: cannot connect"))?;
            let mut req = req.header(hyper::header::HOST, authority.as_str());
            if let Some(t) = token {
                req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
            }
            (req, handshake(TokioIo::new(stream)).await?)
        }
    };
    let mut sender = sender;
    let resp = sender
        .send_request(req.body(body)?)
        .await
        .context("the control API did not answer")?;
    let (parts, body) = resp.into_parts();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

async fn handshake<I>(io: I) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Body>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .context("HTTP handshake with the control API")?;
    tokio::spawn(conn);
    Ok(sender)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn status(socket: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let target = Target::new(socket)?;
    let v = runtime()?.block_on(async {
        call(&target, Method::GET, "/status", None, Body::empty())
            .await?
            .ok_json()
            .await
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render_status(&v));
    }
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

/// `waiting` as a comma-separated list.
fn waiting(v: &Value) -> String {
    v["waiting"]
        .as_array()
        .map(|w| w.iter().map(s).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "-".into())
}

fn human_secs(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// Bytes for people: `512 B`, `1.5 KiB`, `12.3 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The readable form of `/status`.
pub fn render_status(v: &Value) -> String {
    let mut out = String::new();
    let ready = v["ready"].as_bool().unwrap_or(false);
    out += &format!(
        "cfy-init {}  up {}  {}\n",
        s(&v["version"]),
        human_secs(v["uptime"].as_u64().unwrap_or(0)),
        if ready {
            "READY".to_string()
        } else {
            format!("NOT READY (waiting for: {})", waiting(v))
        }
    );
    for (what, why) in v["reasons"].as_object().into_iter().flatten() {
        out += &format!("  {what}: {}\n", why.as_str().unwrap_or_default());
    }
    out += "\nBOOT STEP         STATE     DETAIL\n";
    for step in v["boot"]["steps"].as_array().into_iter().flatten() {
        out += &format!(
            "{:<17} {:<9} {}\n",
            s(&step["name"]),
            s(&step["state"]),
            s(&step["detail"])
        );
    }
    out += "\nSERVICE                  STATE     READY  PID      PROCS  RESTARTS  UPTIME        LAST EXIT  WHY\n";
    for svc in v["services"].as_array().into_iter().flatten() {
        let uptime = svc["uptime"].as_u64().map(human_secs).unwrap_or("-".into());
        let ready = match (svc["ready"].as_bool(), svc["state"].as_str()) {
            (Some(true), Some("EXITED")) => "done",
            (Some(true), _) => "yes",
            _ => "no",
        };
        out += &format!(
            "{:<24} {:<9} {:<6} {:<8} {:<6} {:<9} {:<13} {:<10} {}\n",
            s(&svc["name"]),
            s(&svc["state"]),
            ready,
            s(&svc["pid"]),
            s(&svc["processes"]),
            s(&svc["restarts"]),
            uptime,
            s(&svc["last_exit_code"]),
            svc["reason"].as_str().unwrap_or(""),
        );
    }
    let st = &v["store"];
    out += &format!(
        "\nSTORE {}  {}  free {} of {}\n",
        s(&st["path"]),
        if st["exists"].as_bool() == Some(true) {
            "present"
        } else {
            "MISSING"
        },
        st["free_bytes"].as_u64().map_or("-".into(), human_bytes),
        st["total_bytes"].as_u64().map_or("-".into(), human_bytes),
    );
    for l in v["listeners"].as_array().into_iter().flatten() {
        if l["listening"].as_bool() == Some(false) {
            out += &format!(
                "LISTENER {} {}: NOT LISTENING: {}\n",
                s(&l["kind"]),
                s(&l["address"]),
                s(&l["error"])
            );
        }
    }
    let jobs = v["jobs"].as_array().cloned().unwrap_or_default();
    if !jobs.is_empty() {
        out += "\nJOB                                  KIND      STATE        PHASE       BYTES         RATE/s\n";
        for j in jobs {
            out += &format!(
                "{:<36} {:<9} {:<12} {:<11} {:<13} {}\n",
                s(&j["id"]),
                s(&j["kind"]),
                s(&j["state"]),
                s(&j["phase"]),
                j["bytes"].as_u64().map_or("-".into(), human_bytes),
                j["rate"].as_u64().map_or("-".into(), human_bytes),
            );
            if let Some(e) = j["error"].as_str() {
                out += &format!("    error: {e}\n");
            }
        }
    }
    out
}

pub fn ready(socket: &Path) -> anyhow::Result<ExitCode> {
    let target = Target::new(socket)?;
    let result = runtime()?.block_on(async {
        let r = call(&target, Method::GET, "/readyz", None, Body::empty()).await?;
        let status = r.status;
        Ok::<_, anyhow::Error>((status, r.json().await.unwrap_or(Value::Null)))
    });
    match result {
        Ok((status, _)) if status == StatusCode::OK => Ok(ExitCode::SUCCESS),
        Ok((_, v)) => {
            eprintln!("cfy-init: not ready (waiting for: {})", waiting(&v));
            for (what, why) in v["reasons"].as_object().into_iter().flatten() {
                eprintln!("  {what}: {}", why.as_str().unwrap_or_default());
            }
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("cfy-init: not ready: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Loads the config for the commands that need `snapshot.remote` (Swift copies).
pub type RemoteContext<'a> = &'a dyn Fn() -> anyhow::Result<Context>;

pub fn snapshot(
    socket: &Path,
    cmd: SnapshotCmd,
    remote_ctx: RemoteContext,
) -> anyhow::Result<ExitCode> {
    match &cmd {
        SnapshotCmd::Upload { id, json } => {
            let ctx = remote_ctx()?;
            runtime()?.block_on(super::client_remote::upload(&ctx, id, *json))?;
            return Ok(ExitCode::SUCCESS);
        }
        SnapshotCmd::List { remote: true, .. } => {
            let ctx = remote_ctx()?;
            runtime()?.block_on(super::client_remote::list(&ctx))?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let target = Target::new(socket)?;
    runtime()?.block_on(async move {
        match cmd {
            SnapshotCmd::Upload { .. } => unreachable!("handled above"),
            SnapshotCmd::Create { upload } => {
                let v = call(
                    &target,
                    Method::POST,
                    "/snapshots?wait=true",
                    None,
                    Body::empty(),
                )
                .await?
                .ok_json()
                .await?;
                println!(
                    "snapshot {}: {} ({} uncompressed), services paused {} ms",
                    s(&v["id"]),
                    v["size"].as_u64().map_or("-".into(), human_bytes),
                    v["total_bytes"].as_u64().map_or("-".into(), human_bytes),
                    s(&v["pause_ms"])
                );
                if upload {
                    super::client_remote::upload(&remote_ctx()?, &s(&v["id"]), false).await?;
                }
            }
            SnapshotCmd::List { json, .. } => {
                let v = call(&target, Method::GET, "/snapshots", None, Body::empty())
                    .await?
                    .ok_json()
                    .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(ExitCode::SUCCESS);
                }
                println!(
                    "{:<24} {:<11} {:<11} {:<9} SHA256",
                    "ID", "SIZE", "DATA", "PAUSE ms"
                );
                for m in v["snapshots"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<11} {:<11} {:<9} {}",
                        s(&m["id"]),
                        m["size"].as_u64().map_or("-".into(), human_bytes),
                        m["total_bytes"].as_u64().map_or("-".into(), human_bytes),
                        s(&m["pause_ms"]),
                        s(&m["sha256"])
                    );
                }
            }
            SnapshotCmd::Download { id, file } => download(&target, &id, &file).await?,
            SnapshotCmd::Delete { id } => {
                call(
                    &target,
                    Method::DELETE,
                    &format!("/snapshots/{id}"),
                    None,
                    Body::empty(),
                )
                .await?
                .ok_json()
                .await?;
                println!("snapshot {id}: deleted");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Stream an archive to `file` crash-safely (temp file, fsync, rename) and check its sha256.
async fn download(target: &Target, id: &str, file: &Path) -> anyhow::Result<()> {
    use sha2::Digest;
    let reply = call(
        target,
        Method::GET,
        &format!("/snapshots/{id}/archive"),
        None,
        Body::empty(),
    )
    .await?;
    if !reply.status.is_success() {
        reply.ok_json().await?;
        bail!("download failed");
    }
    let want = reply
        .headers
        .get("x-archive-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let tmp = crate::fsutil::staging_name(file);
    let result = async {
        // 0600: an archive holds the store's secrets.
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .await
            .with_context(|| format!("{}: cannot create", tmp.display()))?;
        let mut hasher = sha2::Sha256::new();
        let mut body = reply.body;
        while let Some(frame) = body.frame().await {
            let frame = frame.context("download interrupted")?;
            if let Some(data) = frame.data_ref() {
                hasher.update(data);
                out.write_all(data).await?;
            }
        }
        out.sync_all().await?;
        let got = hex::encode(hasher.finalize());
        if let Some(want) = want {
            if want != got {
                bail!("checksum mismatch: got {got}, the server says {want}");
            }
        }
        tokio::fs::rename(&tmp, file).await?;
        crate::fsutil::fsync_dir(crate::fsutil::parent_of(file))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("{}: download of {id}", file.display()))?;
    println!("snapshot {id}: saved to {}", file.display());
    Ok(())
}

pub fn restore(socket: &Path, source: &str, remote_ctx: RemoteContext) -> anyhow::Result<ExitCode> {
    if source.starts_with("swift://") {
        let ctx = remote_ctx()?;
        let file = runtime()?.block_on(super::client_remote::fetch(&ctx, source))?;
        let result = restore(socket, &file.display().to_string(), remote_ctx);
        let _ = std::fs::remove_file(&file);
        return result;
    }
    let target = Target::new(socket)?;
    let path = Path::new(source);
    runtime()?.block_on(async move {
        let reply = if path.is_file() {
            let f = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("{source}: cannot open"))?;
            let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 16));
            call(
                &target,
                Method::POST,
                "/restore?wait=true",
                Some("application/zstd"),
                body,
            )
            .await?
        } else {
            crate::snapshot::check_id(source)
                .map_err(|_| anyhow!("{source}: neither an archive file nor a snapshot id"))?;
            let body = Body::from(serde_json::json!({ "id": source }).to_string());
            call(
                &target,
                Method::POST,
                "/restore?wait=true",
                Some("application/json"),
                body,
            )
            .await?
        };
        let v = reply.ok_json().await?;
        println!("restore {}: {}", s(&v["id"]), s(&v["state"]));
        Ok(ExitCode::SUCCESS)
    })
}
