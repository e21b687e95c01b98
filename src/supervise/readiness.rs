//! Health checks: TCP connect, HTTP GET 2xx, exec exit 0, file exists. A service's readiness
//! check (and its optional liveness check) runs as its own task for as long as the service
//! runs, reporting every result to the event loop, which applies the thresholds; a check
//! never blocks the supervisor (an exec check is a child process killed at its timeout).
//! A service with neither check has no task and no timer, so an idle init does not wake.

use std::time::Duration;

use super::ReadinessCheck;

/// Run `check` forever: first every `interval` until it passes once, then every `period`;
/// each result goes to `report` (which returns false when nobody listens any more).
pub async fn watch(
    check: ReadinessCheck,
    timeout: Duration,
    interval: Duration,
    period: Duration,
    mut report: impl FnMut(Result<(), String>) -> bool,
) {
    let mut passed = false;
    loop {
        let result = probe(&check, timeout).await;
        passed |= result.is_ok();
        if !report(result) {
            return;
        }
        tokio::time::sleep(if passed { period } else { interval }).await;
    }
}

/// One check, bounded by `timeout`; Err says why it failed.
pub async fn probe(check: &ReadinessCheck, timeout: Duration) -> Result<(), String> {
    let timed_out = || format!("timed out after {}", humantime::format_duration(timeout));
    match check {
        ReadinessCheck::Started => Ok(()),
        ReadinessCheck::Tcp { address } => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address.as_str()))
                .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect {address}: {e}")),
                Err(_) => Err(format!("connect {address}: {}", timed_out())),
            }
        }
        ReadinessCheck::Http { url } => match tokio::time::timeout(timeout, http_get(url)).await {
            Ok(Ok(status)) if status.is_success() => Ok(()),
            Ok(Ok(status)) => Err(format!("GET {url}: {status}")),
            Ok(Err(e)) => Err(format!("GET {url}: {e}")),
            Err(_) => Err(format!("GET {url}: {}", timed_out())),
        },
        ReadinessCheck::File { path } => match tokio::fs::try_exists(path).await {
            Ok(true) => Ok(()),
            _ => Err(format!("{} does not exist", path.display())),
        },
        ReadinessCheck::Exec { command } => {
            let Some((prog, args)) = command.split_first() else {
                return Err("empty command".into());
            };
            let mut cmd = std::process::Command::new(prog);
            cmd.args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            // run_command kills the check's process group at the timeout.
            match crate::pid1::run_command(&mut cmd, Some(timeout)).await {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(format!("{prog}: {s}")),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    Err(format!("{prog}: {}", timed_out()))
                }
                Err(e) => Err(format!("{prog}: {e}")),
            }
        }
    }
}

/// GET `url` (plain http) and return the status.
async fn http_get(
    url: &str,
) -> Result<hyper::StatusCode, Box<dyn std::error::Error + Send + Sync>> {
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
    Ok(resp.status())
}
