//! Readiness checks: TCP connect, HTTP GET 2xx, exec exit 0, file exists. A probe runs as
//! a task only until it passes (or its retries run out), so an idle supervisor whose
//! services are all ready has no timers at all.

use std::time::Duration;

use super::{Readiness, ReadinessCheck};

/// Probe until the check passes (true) or `retries` checks in a row failed (false).
pub async fn wait_ready(r: Readiness) -> bool {
    let mut failures = 0u32;
    loop {
        let ok = tokio::time::timeout(r.timeout, check_once(&r.check, r.timeout))
            .await
            .unwrap_or(false);
        if ok {
            return true;
        }
        failures += 1;
        if r.retries > 0 && failures >= r.retries {
            return false;
        }
        tokio::time::sleep(r.interval).await;
    }
}

/// One check.
pub async fn check_once(check: &ReadinessCheck, timeout: Duration) -> bool {
    match check {
        ReadinessCheck::Started => true,
        ReadinessCheck::Tcp { address } => tokio::net::TcpStream::connect(address.as_str())
            .await
            .is_ok(),
        ReadinessCheck::Http { url } => http_ok(url).await.unwrap_or(false),
        ReadinessCheck::File { path } => tokio::fs::try_exists(path).await.unwrap_or(false),
        ReadinessCheck::Exec { command } => {
            let Some((prog, args)) = command.split_first() else {
                return false;
            };
            let mut cmd = std::process::Command::new(prog);
            cmd.args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            matches!(
                crate::pid1::run_command(&mut cmd, Some(timeout)).await,
                Ok(s) if s.success()
            )
        }
    }
}

/// GET `url` (plain http) and report whether it answered 2xx.
async fn http_ok(url: &str) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    use http_body_util::Empty;
    use hyper::body::Bytes;
    let uri: hyper::Uri = url.parse()?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// readiness URLs are supported".into());
    }
    let authority = uri.authority().ok_or("URL without host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port)).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    Ok(resp.status().is_success())
}
