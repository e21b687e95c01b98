//! supervisord's HTTP server on its unix socket: `POST /RPC2` (XML-RPC), and the streaming
//! `GET /logtail/<name>[/<channel>]` and `GET /mainlogtail` that `supervisorctl tail -f` and
//! `maintail -f` read; optional basic auth; socket mode and owner as configured.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::config::Context;
use crate::supervise::{Stream, SupervisorHandle};

use super::rpc::{faults, Fault, RereadSource, Rpc};
use super::xmlrpc;
use super::{Loaded, MainLog, ServerSettings, SupervisordError};

type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted (a multicall of every method is a few KiB); a larger
/// one is answered 413. The parser's own limits are in [`xmlrpc`] (`MAX_DEPTH` ...).
pub const MAX_REQUEST: usize = 2 << 20;
/// How much `tail -f` shows before following (supervisord's `tail_f_producer` head).
const TAIL_HEAD: u64 = 1024;
/// How often `tail -f` looks for new output of a process (supervisord polls at 0.1 s too).
const TAIL_POLL: Duration = Duration::from_millis(100);

/// Serve the supervisord socket until the task is dropped (the socket file is removed
/// then). `loaded` is what [`super::load`] returned, its programs already given to the
/// supervisor; `mainlog` is the ring installed as a tracing layer (for `readLog`).
/// Returns at once when there is no socket to serve.
pub async fn serve(
    ctx: Context,
    handle: SupervisorHandle,
    loaded: Loaded,
    mainlog: Option<MainLog>,
) -> Result<(), SupervisordError> {
    let Some(settings) = loaded.server.clone() else {
        return Ok(());
    };
    let cfg = &ctx.config.supervisord;
    let rpc = Rpc::new(
        handle,
        RereadSource {
            conf: cfg.conf.clone(),
            root: ctx.root.clone(),
            overrides: cfg.overrides.clone(),
        },
        &loaded.identifier,
        loaded.programs,
        mainlog,
    );
    let (listener, _guard) = bind(&settings)?;
    tracing::info!(socket = %settings.socket.display(), "supervisord interface listening");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "supervisord socket: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let rpc = rpc.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let rpc = rpc.clone();
                let settings = settings.clone();
                async move { Ok::<_, Infallible>(route(&rpc, &settings, req).await) }
            });
            // The timer makes hyper drop a client that never finishes its headers (30 s).
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Removes the socket file when serving ends, as supervisord does on exit.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn socket_error(path: &Path, reason: impl std::fmt::Display) -> SupervisordError {
    SupervisordError::Socket {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Bind the socket, replacing a stale file but never a live server, then set its mode and
/// owner.
fn bind(s: &ServerSettings) -> Result<(UnixListener, SocketFile), SupervisordError> {
    use std::os::unix::fs::PermissionsExt;
    let path = &s.socket;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| socket_error(path, e))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(socket_error(
                path,
                "another program is already listening on it (is supervisord still running?)",
            ));
        }
        std::fs::remove_file(path).map_err(|e| socket_error(path, e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| socket_error(path, e))?;
    let guard = SocketFile(path.clone());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(s.chmod))
        .map_err(|e| socket_error(path, e))?;
    if let Some(owner) = &s.chown {
        let (uid, gid) = owner_ids(owner).map_err(|m| socket_error(path, m))?;
        nix::unistd::chown(path, Some(uid), Some(gid)).map_err(|e| socket_error(path, e))?;
    }
    Ok((listener, guard))
}

/// `user` or `user:group` → ids (the user's primary group when no group is given).
fn owner_ids(owner: &str) -> Result<(nix::unistd::Uid, nix::unistd::Gid), String> {
    use nix::unistd::{Group, User};
    let (user, group) = match owner.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (owner, None),
    };
    let u = User::from_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| format!("chown: no such user {user:?} (fix [unix_http_server] chown)"))?;
    let gid = match group {
        None => u.gid,
        Some(g) => {
            Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    format!("chown: no such group {g:?} (fix [unix_http_server] chown)")
                })?
                .gid
        }
    };
    Ok((u.uid, gid))
}

async fn route(rpc: &Rpc, settings: &ServerSettings, req: Request<Incoming>) -> Response<Body> {
    if !authorized(settings, &req) {
        // Read the request first: answering while the client still sends its body would
        // close the connection under it (a broken pipe instead of "401 Unauthorized").
        let _ = Limited::new(req.into_body(), MAX_REQUEST).collect().await;
        let mut r = plain(StatusCode::UNAUTHORIZED, "Unauthorized");
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Basic realm=\"default\""),
        );
        return r;
    }
    let path = req.uri().path().to_string();
    if path.starts_with("/RPC2") {
        if req.method() != Method::POST {
            return plain(StatusCode::BAD_REQUEST, "Bad Request");
        }
        return xmlrpc_request(rpc, req).await;
    }
    if req.method() != Method::GET {
        return plain(StatusCode::BAD_REQUEST, "Bad Request");
    }
    if let Some(rest) = path.strip_prefix("/logtail/") {
        return logtail(rpc, rest).await;
    }
    if path.starts_with("/mainlogtail") {
        return mainlogtail(rpc);
    }
    plain(StatusCode::NOT_FOUND, "Not Found")
}

fn authorized(settings: &ServerSettings, req: &Request<Incoming>) -> bool {
    use base64::Engine;
    use subtle::ConstantTimeEq;
    let Some(user) = &settings.username else {
        return true;
    };
    let expected = format!(
        "{user}:{}",
        settings.password.as_ref().map(|p| p.expose()).unwrap_or("")
    );
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .unwrap_or_default();
    given.ct_eq(expected.as_bytes()).into()
}

async fn xmlrpc_request(rpc: &Rpc, req: Request<Incoming>) -> Response<Body> {
    let too_large = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_REQUEST as u64);
    if too_large {
        tracing::warn!(
            limit = MAX_REQUEST,
            "supervisord socket: request body too large"
        );
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            tracing::warn!(
                limit = MAX_REQUEST,
                "supervisord socket: request body too large"
            );
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
        }
        Err(_) => return plain(StatusCode::BAD_REQUEST, "Bad Request"),
    };
    let call = match xmlrpc::parse_call(&body) {
        Ok(c) => c,
        Err(xmlrpc::ParseError::Limit(why)) => {
            tracing::warn!("supervisord socket: request refused: {why}");
            let f = Fault::with(faults::INCORRECT_PARAMETERS, why);
            return text_xml(xmlrpc::fault(f.code, &f.text));
        }
        Err(e) => {
            tracing::warn!("supervisord socket: {e}");
            return plain(StatusCode::BAD_REQUEST, "Bad Request");
        }
    };
    tracing::debug!(method = %call.method, "XML-RPC call");
    let xml = match rpc.call(&call.method, &call.params).await {
        Ok(v) => xmlrpc::response(&v),
        Err(f) => {
            tracing::debug!(method = %call.method, code = f.code, fault = %f.text, "XML-RPC fault");
            xmlrpc::fault(f.code, &f.text)
        }
    };
    text_xml(xml)
}

fn text_xml(xml: String) -> Response<Body> {
    let mut r = Response::new(full(xml));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/xml"),
    );
    r
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    r
}

fn streaming(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain;charset=utf-8"),
    );
    h.insert(
        "X-Accel-Buffering",
        hyper::header::HeaderValue::from_static("no"),
    );
    r
}

/// `GET /logtail/<namespec>[/stdout|stderr]`: the last KiB, then new output as it comes.
async fn logtail(rpc: &Rpc, rest: &str) -> Response<Body> {
    let rest = percent_decode(rest);
    let (namespec, channel) = match rest.split_once('/') {
        Some((n, c)) => (n.to_string(), c.to_string()),
        None => (rest.clone(), "stdout".to_string()),
    };
    let stream = match channel.as_str() {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return plain(StatusCode::NOT_FOUND, "Not Found"),
    };
    let name = namespec
        .split_once(':')
        .map(|(_, p)| p.to_string())
        .unwrap_or_else(|| namespec.clone());
    let handle = rpc.handle().clone();
    let Ok(first) = handle.tail(&name, stream, -(TAIL_HEAD as i64), TAIL_HEAD as usize) else {
        return plain(StatusCode::NOT_FOUND, "Not Found");
    };
    let start = first.end_offset.saturating_sub(TAIL_HEAD);
    let body = futures_util::stream::unfold(
        (handle, name, stream, start),
        |(handle, name, stream, pos)| async move {
            loop {
                let Ok(t) = handle.tail(
                    &name,
                    stream,
                    -(TAIL_HEAD as i64 * 64),
                    TAIL_HEAD as usize * 64,
                ) else {
                    return None; // the process was removed
                };
                if t.end_offset > pos {
                    let have_from = t.end_offset - t.bytes.len() as u64;
                    let from = pos.max(have_from);
                    let chunk = Bytes::copy_from_slice(&t.bytes[(from - have_from) as usize..]);
                    let next = (handle, name, stream, t.end_offset);
                    return Some((Ok::<_, Infallible>(Frame::data(chunk)), next));
                }
                tokio::time::sleep(TAIL_POLL).await;
            }
        },
    );
    streaming(StreamBody::new(body).boxed())
}

/// `GET /mainlogtail`: the init's own log, followed.
fn mainlogtail(rpc: &Rpc) -> Response<Body> {
    let Some(log) = rpc.mainlog().cloned() else {
        return plain(StatusCode::NOT_FOUND, "Not Found");
    };
    let (_, total) = log.snapshot();
    let rx = log.subscribe();
    let start = total.saturating_sub(TAIL_HEAD);
    let body = futures_util::stream::unfold((log, rx, start), |(log, mut rx, pos)| async move {
        loop {
            let (buf, total) = log.snapshot();
            if total > pos {
                let have_from = total - buf.len() as u64;
                let from = pos.max(have_from);
                let chunk = Bytes::copy_from_slice(&buf[(from - have_from) as usize..]);
                return Some((Ok::<_, Infallible>(Frame::data(chunk)), (log, rx, total)));
            }
            rx.changed().await.ok()?;
        }
    });
    streaming(StreamBody::new(body).boxed())
}

/// `%XX` decoding of a URL path (supervisorctl quotes nothing, other clients might).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
