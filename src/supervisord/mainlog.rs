//! The init's own log, kept in a bounded in-memory ring for supervisord's `readLog` and
//! `supervisorctl maintail [-f]`: a `tracing` layer the integrator installs next to the
//! normal output.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::Layer;

/// A cloneable handle on the ring; one clone goes into the subscriber, one to [`super::serve`].
#[derive(Clone)]
pub struct MainLog {
    inner: Arc<Mutex<Ring>>,
    /// Bumped on every write so `maintail -f` can wait without polling.
    written: watch::Sender<u64>,
}

struct Ring {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// Bytes ever written (the supervisord "file size").
    total: u64,
}

impl MainLog {
    pub fn new(capacity: usize) -> MainLog {
        MainLog {
            inner: Arc::new(Mutex::new(Ring {
                bytes: VecDeque::with_capacity(capacity.min(64 << 10)),
                capacity: capacity.max(1),
                total: 0,
            })),
            written: watch::channel(0).0,
        }
    }

    /// Append raw bytes (one formatted line per event).
    pub fn append(&self, data: &[u8]) {
        let total = {
            let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            // Whole slices, not byte by byte: this runs for every log line.
            let keep = &data[data.len().saturating_sub(r.capacity)..];
            let over = (r.bytes.len() + keep.len()).saturating_sub(r.capacity);
            r.bytes.drain(..over);
            r.bytes.extend(keep);
            r.total += data.len() as u64;
            r.total
        };
        self.written.send_replace(total);
    }

    /// The retained bytes and the total ever written (so they cover `total-len..total`).
    pub fn snapshot(&self) -> (Vec<u8>, u64) {
        let r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = r.bytes.as_slices();
        ([a, b].concat(), r.total)
    }

    /// Drop everything retained (`clearLog`).
    pub fn clear(&self) {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.bytes.clear();
    }

    /// Wakes when new bytes arrive.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }
}

static GLOBAL: OnceLock<MainLog> = OnceLock::new();

/// Create the process-wide ring (first call wins) for the logging set-up to install as a
/// layer: `registry().with(fmt_layer).with(supervisord::mainlog::install(cap))`.
pub fn install(capacity: usize) -> MainLog {
    GLOBAL.get_or_init(|| MainLog::new(capacity)).clone()
}

/// The ring installed by [`install`], if any (`readLog` answers NO_FILE without it).
pub fn global() -> Option<MainLog> {
    GLOBAL.get().cloned()
}

impl<S: Subscriber> Layer<S> for MainLog {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let meta = event.metadata();
        let mut line = format!("{} {} ", timestamp(), meta.level());
        let mut visitor = LineVisitor(&mut line);
        event.record(&mut visitor);
        line.push('\n');
        self.append(line.as_bytes());
    }
}

struct LineVisitor<'a>(&'a mut String);

impl Visit for LineVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// supervisord's log time format, `2024-01-02 03:04:05,678`, in UTC.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02},{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant's algorithm; avoids a date crate
/// for one timestamp).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_bytes_and_counts_all() {
        let log = MainLog::new(4);
        log.append(b"abcdef");
        assert_eq!(log.snapshot(), (b"cdef".to_vec(), 6));
        log.clear();
        assert_eq!(log.snapshot(), (Vec::new(), 6));
    }

    #[test]
    fn ring_wraps_across_appends() {
        let log = MainLog::new(5);
        log.append(b"abc");
        log.append(b"de");
        assert_eq!(log.snapshot(), (b"abcde".to_vec(), 5));
        log.append(b"fg");
        assert_eq!(log.snapshot(), (b"cdefg".to_vec(), 7));
        log.append(b"hijklmn");
        assert_eq!(log.snapshot(), (b"jklmn".to_vec(), 14));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
