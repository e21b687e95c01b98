//! Listeners: the unix control socket (bound under a temporary name, given its mode and
//! group, then renamed into place so it is never reachable with looser permissions) and the
//! optional TCP listener guarded by the bearer token. Both serve the same router over
//! HTTP/1.1 with hyper.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::auth::{self, Token};
use super::routes::{self, AppState};
use super::{BootState, HooksError};
use crate::config::Context;
use crate::snapshot::control::ServiceControl;
use crate::snapshot::Engine;

/// A started API: where it listens, and its accept loops.
pub struct Running {
    pub socket: PathBuf,
    pub tcp: Option<SocketAddr>,
    pub engine: Arc<Engine>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Wait for the accept loops (they end only with the runtime).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Bind the listeners and start serving; returns once both are bound.
pub async fn start(
    ctx: Context,
    control: Arc<dyn ServiceControl>,
    boot: BootState,
) -> Result<Running, HooksError> {
    let cfg = ctx.config.hooks.clone();
    let engine = Engine::new(&ctx, control.clone());
    let state = AppState {
        control,
        engine: engine.clone(),
        boot,
        started: Instant::now(),
    };
    let app = routes::router(state);
    let mut tasks = JoinSet::new();

    // Read the token first: a bad token file must not leave a half-started API behind.
    let token = match &cfg.listen {
        Some(_) => Some(Token::from_file(
            cfg.token_file
                .as_deref()
                .expect("validated: listen needs token_file"),
        )?),
        None => None,
    };
    let unix = bind_unix(&cfg.socket, &cfg.socket_mode, cfg.socket_group.as_deref())?;
    tracing::info!(socket = %cfg.socket.display(), "control API listening");
    tasks.spawn(accept_unix(unix, app.clone()));
    if ctx.config.snapshot.schedule.is_some() {
        let reaper = engine.owns_reaping();
        tasks.spawn(crate::snapshot::schedule::run(
            ctx.clone(),
            engine.clone(),
            reaper,
        ));
    }

    let mut tcp_addr = None;
    if let (Some(addr), Some(token)) = (&cfg.listen, token) {
        let listener = TcpListener::bind(addr).await.map_err(|e| HooksError::Tcp {
            addr: addr.clone(),
            source: e,
        })?;
        let local = listener.local_addr().map_err(|e| HooksError::Tcp {
            addr: addr.clone(),
            source: e,
        })?;
        tcp_addr = Some(local);
        tracing::info!(%local, "control API listening on TCP (bearer token required)");
        let guarded = app.layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ));
        tasks.spawn(accept_tcp(listener, guarded));
    }
    Ok(Running {
        socket: cfg.socket,
        tcp: tcp_addr,
        engine,
        tasks,
    })
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
