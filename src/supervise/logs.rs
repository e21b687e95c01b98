//! Child output: each stdout/stderr pipe is read by a small task that splits it into lines
//! (long lines cut at [`MAX_LINE`]), keeps the last bytes for `tail`, and hands lines to
//! one writer thread through a bounded queue. When the queue is full the line is dropped
//! and counted, so a child flooding its output never stalls supervision and the init's
//! own (possibly slow) stderr never blocks the event loop. Each service's lines also pass a
//! token bucket ([`super::LogRateLimit`]); what it refuses is dropped, counted per service
//! and reported in one line once the flood eases.
//!
//! Lines are logged under the target [`OUTPUT_TARGET`] with a `service` field and the line
//! as the plain message: the text format prints them `[service] line` (see
//! [`crate::logging`]), JSON as `"message": "line", "service": "..."`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::AsyncReadExt;

use super::{LogRateLimit, LogTail, LogTarget, OutputLevel, Stream};

/// The `tracing` target of service output lines.
pub const OUTPUT_TARGET: &str = "cfy_init::output";

/// Longest line logged as one event; longer lines are split.
pub const MAX_LINE: usize = 16 * 1024;
/// Bytes of output kept per stream for `tail`.
pub const TAIL_BYTES: usize = 64 * 1024;
/// Lines waiting for the writer thread before new ones are dropped.
const QUEUE_LINES: usize = 4096;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines dropped so far because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The last [`TAIL_BYTES`] bytes of one stream and the total ever written.
#[derive(Debug, Default)]
pub struct Ring {
    buf: VecDeque<u8>,
    total: u64,
}

impl Ring {
    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let data = &data[data.len().saturating_sub(TAIL_BYTES)..];
        let excess = (self.buf.len() + data.len()).saturating_sub(TAIL_BYTES);
        self.buf.drain(..excess);
        self.buf.extend(data);
    }

    /// Up to `len` bytes from `offset` (negative: counted back from the end).
    pub fn read(&self, offset: i64, len: usize) -> LogTail {
        let first = self.total - self.buf.len() as u64;
        let want = if offset < 0 {
            self.total.saturating_sub(offset.unsigned_abs())
        } else {
            (offset as u64).min(self.total)
        };
        let start = want.max(first);
        let skip = (start - first) as usize;
        let bytes: Vec<u8> = self.buf.iter().skip(skip).take(len).copied().collect();
        LogTail {
            end_offset: start + bytes.len() as u64,
            bytes,
            overflow: want < first,
        }
    }
}

/// Both captured streams of a service, and its output rate limit.
#[derive(Debug, Default)]
pub struct Tails {
    pub stdout: Mutex<Ring>,
    pub stderr: Mutex<Ring>,
    bucket: Mutex<Bucket>,
    dropped: AtomicU64,
}

/// Token bucket state.
#[derive(Debug, Default)]
struct Bucket {
    tokens: f64,
    last: Option<std::time::Instant>,
    /// Dropped since the last report line.
    unreported: u64,
}

impl Tails {
    /// Lines dropped by the rate limit so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether one more line may be logged now; Some(n) when n dropped lines are to be
    /// reported first.
    fn admit(&self, limit: &LogRateLimit) -> (bool, u64) {
        if limit.lines_per_second == 0 {
            return (true, 0);
        }
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let burst = f64::from(limit.burst.max(1));
        let refill = b.last.map_or(burst, |t| {
            now.duration_since(t).as_secs_f64() * f64::from(limit.lines_per_second)
        });
        b.tokens = (b.tokens + refill).min(burst);
        b.last = Some(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            (true, std::mem::take(&mut b.unreported))
        } else {
            b.unreported += 1;
            self.dropped.fetch_add(1, Ordering::Relaxed);
            (false, 0)
        }
    }

    /// Dropped lines not reported yet (at the end of the output).
    fn take_unreported(&self) -> u64 {
        std::mem::take(
            &mut self
                .bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unreported,
        )
    }

    pub fn ring(&self, stream: Stream) -> &Mutex<Ring> {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }
}

/// Where the writer thread puts one stream's lines.
pub enum Sink {
    Log,
    File(Mutex<RotatingFile>),
}

impl Sink {
    /// The sink for a target (None for `null`).
    pub fn for_target(target: &LogTarget) -> Option<Arc<Sink>> {
        match target {
            LogTarget::Null => None,
            LogTarget::Log => Some(Arc::new(Sink::Log)),
            LogTarget::File {
                path,
                max_bytes,
                backups,
            } => Some(Arc::new(Sink::File(Mutex::new(RotatingFile::new(
                path.clone(),
                *max_bytes,
                *backups,
            ))))),
        }
    }
}

struct Line {
    service: Arc<str>,
    stream: Stream,
    level: OutputLevel,
    text: Vec<u8>,
    sink: Arc<Sink>,
}

/// How a pump treats one stream's lines.
#[derive(Debug, Clone)]
pub struct LineRules {
    /// Level of the logged lines.
    pub level: OutputLevel,
    pub limit: LogRateLimit,
}

/// What the writer thread takes: a line, or a barrier answered once every line queued
/// before it is written.
enum Item {
    Line(Line),
    Flush(std::sync::mpsc::SyncSender<()>),
}

fn queue() -> &'static crossbeam_channel::Sender<Item> {
    static TX: OnceLock<crossbeam_channel::Sender<Item>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded::<Item>(QUEUE_LINES);
        std::thread::Builder::new()
            .name("cfy-init-log".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                for item in rx {
                    match item {
                        Item::Line(line) => write_line(line),
                        Item::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .expect("spawn the log writer thread");
        tx
    })
}

/// Wait (at most `limit`) until every line queued so far is written: the init calls this
/// before it exits, so a service's last lines (PostgreSQL's "database system is shut
/// down") are not lost with the process. Returns whether the queue was drained in time.
pub fn flush(limit: std::time::Duration) -> bool {
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    let deadline = std::time::Instant::now() + limit;
    if queue().send_timeout(Item::Flush(done_tx), limit).is_err() {
        return false;
    }
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    done_rx.recv_timeout(left).is_ok()
}

fn write_line(line: Line) {
    let text = String::from_utf8_lossy(&line.text);
    match &*line.sink {
        Sink::Log => log_line(&line.service, line.stream, line.level, &text),
        Sink::File(f) => {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = f.write_line(&line.text) {
                tracing::warn!(
                    service = &*line.service,
                    "cannot write log file {}: {e}",
                    f.path.display()
                );
            }
        }
    }
}

/// Log one output line at `level` (a `tracing` level must be known at each call site).
fn log_line(name: &str, stream: Stream, level: OutputLevel, text: &str) {
    macro_rules! at {
        ($lvl:expr) => {
            match stream {
                Stream::Stdout => tracing::event!(target: OUTPUT_TARGET, $lvl, service = name, "{text}"),
                Stream::Stderr => tracing::event!(
                    target: OUTPUT_TARGET,
                    $lvl,
                    service = name,
                    stream = "stderr",
                    "{text}"
                ),
            }
        };
    }
    use tracing::Level;
    match level {
        OutputLevel::Error => at!(Level::ERROR),
        OutputLevel::Warn => at!(Level::WARN),
        OutputLevel::Info => at!(Level::INFO),
        OutputLevel::Debug => at!(Level::DEBUG),
        OutputLevel::Trace => at!(Level::TRACE),
    }
}

fn report_dropped(service: &str, n: u64, limit: &LogRateLimit) {
    if n > 0 {
        tracing::warn!(
            service,
            dropped = n,
            lines_per_second = limit.lines_per_second,
            burst = limit.burst,
            "output lines dropped by log_rate_limit"
        );
    }
}

/// Read one pipe until EOF: lines to `sink`, bytes to `ring`.
pub async fn pump(
    service: Arc<str>,
    stream: Stream,
    fd: OwnedFd,
    sink: Option<Arc<Sink>>,
    tails: Arc<Tails>,
    rules: LineRules,
) {
    let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(service = &*service, "cannot read output pipe: {e}");
            return;
        }
    };
    // The read buffer is allocated at the first output: many services never write, and 8 KiB
    // per pipe adds up with dozens of services.
    if pipe.readable().await.is_err() {
        return;
    }
    let mut chunk = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &chunk[..n];
        tails
            .ring(stream)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(data);
        let Some(sink) = &sink else { continue };
        pending.extend_from_slice(data);
        for line in split_lines(&mut pending) {
            admit_and_send(&service, stream, line, sink, &tails, &rules);
        }
    }
    if let Some(sink) = &sink {
        if !pending.is_empty() {
            let line = std::mem::take(&mut pending);
            admit_and_send(&service, stream, line, sink, &tails, &rules);
        }
        report_dropped(&service, tails.take_unreported(), &rules.limit);
    }
}

/// Lines to the init's log pass the rate limit; file targets are not limited.
fn admit_and_send(
    service: &Arc<str>,
    stream: Stream,
    text: Vec<u8>,
    sink: &Arc<Sink>,
    tails: &Tails,
    rules: &LineRules,
) {
    if matches!(**sink, Sink::Log) {
        let (ok, unreported) = tails.admit(&rules.limit);
        report_dropped(service, unreported, &rules.limit);
        if !ok {
            return;
        }
    }
    let level = match stream {
        Stream::Stdout => OutputLevel::Info,
        Stream::Stderr => rules.level,
    };
    send(service, stream, level, text, sink);
}

/// Take every complete line (without its newline) out of `pending`, and cut a partial line
/// that grew past [`MAX_LINE`].
fn split_lines(pending: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(i) = pending[start..].iter().position(|&b| b == b'\n') {
        let end = start + i;
        let mut line = &pending[start..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        out.extend(line.chunks(MAX_LINE).map(<[u8]>::to_vec));
        if line.is_empty() {
            out.push(Vec::new());
        }
        start = end + 1;
    }
    pending.drain(..start);
    while pending.len() >= MAX_LINE {
        out.push(pending.drain(..MAX_LINE).collect());
    }
    out
}

fn send(service: &Arc<str>, stream: Stream, level: OutputLevel, text: Vec<u8>, sink: &Arc<Sink>) {
    let line = Line {
        service: service.clone(),
        stream,
        level,
        text,
        sink: sink.clone(),
    };
    if queue().try_send(Item::Line(line)).is_err() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// A log file rotated by size: `path` → `path.1` → ... → `path.N` (supervisord's scheme).
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    backups: u32,
    file: Option<File>,
    size: u64,
}

impl RotatingFile {
    pub fn new(path: PathBuf, max_bytes: u64, backups: u32) -> Self {
        Self {
            path,
            max_bytes,
            backups,
            file: None,
            size: 0,
        }
    }

    pub fn write_line(&mut self, text: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        let need = text.len() as u64 + 1;
        if self.max_bytes > 0 && self.size > 0 && self.size + need > self.max_bytes {
            self.rotate()?;
            return self.write_line(text);
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(text)?;
        f.write_all(b"\n")?;
        self.size += need;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        if self.backups == 0 {
            return std::fs::remove_file(&self.path);
        }
        for i in (1..self.backups).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        std::fs::rename(&self.path, name(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_returns_once_every_queued_line_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let sink = Arc::new(Sink::File(Mutex::new(RotatingFile::new(
            path.clone(),
            0,
            0,
        ))));
        let name: Arc<str> = Arc::from("svc");
        for i in 0..1000 {
            send(
                &name,
                Stream::Stdout,
                OutputLevel::Info,
                format!("line {i}").into_bytes(),
                &sink,
            );
        }
        assert!(flush(std::time::Duration::from_secs(30)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(text.lines().last(), Some("line 999"));
    }

    #[test]
    fn lines_are_split_and_long_ones_cut() {
        let mut p = b"a\r\nbc\n\npartial".to_vec();
        assert_eq!(
            split_lines(&mut p),
            vec![b"a".to_vec(), b"bc".to_vec(), vec![]]
        );
        assert_eq!(p, b"partial");
        let mut long = vec![b'x'; MAX_LINE * 2 + 5];
        let out = split_lines(&mut long);
        assert_eq!(out.len(), 2);
        assert_eq!(long.len(), 5);
    }

    #[test]
    fn ring_keeps_the_end_and_reports_overflow() {
        let mut r = Ring::default();
        r.push(b"hello ");
        r.push(b"world");
        let t = r.read(-5, 100);
        assert_eq!(t.bytes, b"world");
        assert_eq!(t.end_offset, 11);
        assert!(!t.overflow);
        assert_eq!(r.read(0, 5).bytes, b"hello");
        r.push(&vec![b'z'; TAIL_BYTES]);
        let t = r.read(0, 3);
        assert!(t.overflow);
        assert_eq!(t.bytes, b"zzz");
        assert_eq!(r.read(-1, 10).end_offset, 11 + TAIL_BYTES as u64);
    }

    #[test]
    fn rotating_file_keeps_backups() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("svc.log");
        let mut f = RotatingFile::new(p.clone(), 6, 2);
        for l in ["aaaa", "bbbb", "cccc", "dddd"] {
            f.write_line(l.as_bytes()).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "dddd\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("svc.log.1")).unwrap(),
            "cccc\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("svc.log.2")).unwrap(),
            "bbbb\n"
        );
        assert!(!dir.path().join("svc.log.3").exists());
    }
}
