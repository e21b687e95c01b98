//! Listeners: the unix control socket (bound under a temporary name, given its mode and
//! group, then renamed into place so it is never reachable with looser permissions) and the
//! optional TCP listener guarded by the bearer token. Both serve the same router over
//! HTTP/1.1 with hyper. Each listener fails alone (see [`start`]).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::auth::{self, Token};
use super::routes::{self, AppState};
use super::runtime::{self, RuntimeInfo};
use super::{BootState, HooksError};
use crate::config::Context;
use crate::snapshot::control::ServiceControl;
use crate::snapshot::Engine;

/// One listener's state, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListenerView {
    /// `unix` or `tcp`.
    pub kind: &'static str,
    /// Socket path or `host:port` (the bound address once listening).
    pub address: String,
    pub listening: bool,
    /// Why it is not listening.
    pub error: Option<String>,
}

/// The listeners' states, shared with the routes.
#[derive(Debug, Clone, Default)]
pub struct Listeners(Arc<RwLock<Vec<ListenerView>>>);

impl Listeners {
    pub fn view(&self) -> Vec<ListenerView> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn push(&self, v: ListenerView) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).push(v);
    }
}

/// A started API: where it listens, and its accept loops.
pub struct Running {
    pub socket: PathBuf,
    pub tcp: Option<SocketAddr>,
    pub engine: Arc<Engine>,
    /// Every listener, the failed ones with their error.
    pub listeners: Vec<ListenerView>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Wait for the accept loops (they end only with the runtime).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Bind the listeners and start serving; returns once they are bound. Each listener fails
/// alone: a TCP port that is taken or an unreadable token file leaves the unix socket
/// serving (and the other way round); the failure is logged once and shown in `/status`.
/// An error only when no listener could be started at all.
pub async fn start(
    ctx: Context,
    control: Arc<dyn ServiceControl>,
    boot: BootState,
) -> Result<Running, HooksError> {
    let cfg = ctx.config.hooks.clone();
    let engine = Engine::new(&ctx, control.clone());
    let listeners = Listeners::default();
    let state = AppState {
        control,
        engine: engine.clone(),
        boot,
        started: Instant::now(),
        listeners: listeners.clone(),
    };
    let app = routes::router(state);
    let mut tasks = JoinSet::new();
    let mut first_error = None;
    let mut failed = |kind: &'static str, address: String, e: HooksError| {
        tracing::error!(
            listener = kind,
            "control API: {e}; the other listeners keep serving"
        );
        listeners.push(ListenerView {
            kind,
            address,
            listening: false,
            error: Some(e.to_string()),
        });
        first_error.get_or_insert(e);
    };

    let socket_addr = cfg.socket.display().to_string();
    let mut unix_ok = false;
    match bind_unix(&cfg.socket, &cfg.socket_mode, cfg.socket_group.as_deref()) {
        Ok(unix) => {
            tracing::info!(socket = %socket_addr, "control API listening");
            listeners.push(ListenerView {
                kind: "unix",
                address: socket_addr,
                listening: true,
                error: None,
            });
            tasks.spawn(accept_unix(unix, app.clone()));
            unix_ok = true;
        }
        Err(e) => failed("unix", socket_addr, e),
    }

    let mut tcp_addr = None;
    if let Some(addr) = &cfg.listen {
        match bind_tcp(addr, cfg.token_file.as_deref()).await {
            Ok((listener, local, token)) => {
                tcp_addr = Some(local);
                tracing::info!(%local, "control API listening on TCP (bearer token required)");
                listeners.push(ListenerView {
                    kind: "tcp",
                    address: local.to_string(),
                    listening: true,
                    error: None,
                });
                let guarded = app.layer(axum::middleware::from_fn_with_state(
                    token,
                    auth::require_token,
                ));
                tasks.spawn(accept_tcp(listener, guarded));
            }
            Err(e) => failed("tcp", addr.clone(), e),
        }
    }
    if tasks.is_empty() {
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    if ctx.config.snapshot.schedule.is_some() {
        let reaper = engine.owns_reaping();
        tasks.spawn(crate::snapshot::schedule::run(
            ctx.clone(),
            engine.clone(),
            reaper,
        ));
    }
    let info = RuntimeInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        socket: unix_ok.then(|| cfg.socket.clone()),
        tcp: tcp_addr.map(|a| a.to_string()),
        token_file: cfg.token_file.clone(),
    };
    if let Err(e) = runtime::write(&ctx.root, &info) {
        tracing::warn!(
            file = %runtime::path(&ctx.root).display(),
            "cannot write the runtime file ({e}); the CLI falls back to the config file"
        );
    }
    Ok(Running {
        socket: cfg.socket,
        tcp: tcp_addr,
        engine,
        listeners: listeners.view(),
        tasks,
    })
}

/// The TCP listener and its token (read first: no listener without a token).
async fn bind_tcp(
    addr: &str,
    token_file: Option<&Path>,
) -> Result<(TcpListener, SocketAddr, Token), HooksError> {
    let token = Token::from_file(token_file.expect("validated: listen needs token_file"))?;
    let tcp_err = |e| HooksError::Tcp {
        addr: addr.to_string(),
        source: e,
    };
    let listener = TcpListener::bind(addr).await.map_err(tcp_err)?;
    let local = listener.local_addr().map_err(tcp_err)?;
    Ok((listener, local, token))
}

fn bind_unix(path: &Path, mode: &str, group: Option<&str>) -> Result<UnixListener, HooksError> {
    let err = |e| HooksError::Socket {
        path: path.to_path_buf(),
        source: e,
    };
    let dir = crate::fsutil::parent_of(path);
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = crate::fsutil::staging_name(path);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(err)?;
    let finish = || -> Result<(), HooksError> {
        let mode = u32::from_str_radix(mode, 8).unwrap_or(0o600);
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
        if let Some(g) = group {
            let gid = resolve_group(g)?;
            std::os::unix::fs::chown(&tmp, None, Some(gid)).map_err(err)?;
        }
        // Replaces a stale socket from a previous run atomically.
        std::fs::rename(&tmp, path).map_err(err)
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

fn resolve_group(g: &str) -> Result<u32, HooksError> {
    if let Ok(gid) = g.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(grp)) => Ok(grp.gid.as_raw()),
        _ => Err(HooksError::Group(g.to_string())),
    }
}

async fn accept_unix(listener: UnixListener, app: Router) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(TokioIo::new(stream), app.clone()));
            }
            Err(e) => accept_error(e).await,
        }
    }
}

async fn accept_tcp(listener: TcpListener, app: Router) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(TokioIo::new(stream), app.clone()));
            }
            Err(e) => accept_error(e).await,
        }
    }
}

/// Out of file descriptors and the like: log and back off instead of spinning.
async fn accept_error(e: std::io::Error) {
    tracing::warn!(error = %e, "control API: accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

async fn serve_connection<I>(io: I, app: Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await
    {
        tracing::debug!(error = %e, "control API connection ended with an error");
    }
}
