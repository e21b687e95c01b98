//! Logging set-up: one line per event through `tracing`, text by default, JSON on request.
//! Child output is logged by the supervisor under [`crate::supervise::logs::OUTPUT_TARGET`]
//! with the service name as a field and the line as the message: text shows it once, as
//! `[name] line`; JSON has `"service"` and a plain `"message"`.

use serde::{Deserialize, Serialize};

/// Output format of the init's own log.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable single lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `log:` section of the config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`. Overridden by `--log-format` / `CFY_INIT_LOG_FORMAT`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,cfy_init::persist=debug`.
    /// Overridden by `CFY_INIT_LOG`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Install the global subscriber. Safe to call more than once (later calls are ignored),
/// so tests and subcommands can all call it. With `main_log_bytes`, the log is also kept in
/// a bounded ring for supervisord's `readLog` / `supervisorctl maintail`.
pub fn init(format: LogFormat, level: &str, main_log_bytes: Option<usize>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter, Layer};
    // One filter per layer (an EnvFilter cannot be shared): the ring keeps the lines the
    // output shows. Unfiltered, it made every disabled `debug!` live and formatted each
    // XML-RPC call into the ring.
    let filter = || {
        std::env::var("CFY_INIT_LOG")
            .ok()
            .and_then(|f| EnvFilter::try_new(f).ok())
            .or_else(|| EnvFilter::try_new(level).ok())
            .unwrap_or_else(|| EnvFilter::new("info"))
    };
    // Colour only for a person at a terminal: `docker logs` and log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = fmt::layer().with_writer(std::io::stderr).with_target(false);
    let output = match format {
        LogFormat::Text => output
            .with_ansi(ansi)
            .event_format(OutputLines(fmt::format().with_target(false)))
            .boxed(),
        LogFormat::Json => output.json().flatten_event(true).boxed(),
    };
    let ring =
        main_log_bytes.map(|cap| crate::supervisord::mainlog::install(cap).with_filter(filter()));
    let _ = tracing_subscriber::registry()
        .with(output.with_filter(filter()))
        .with(ring)
        .try_init();
}

/// Text format: service output lines as `TIME LEVEL [name] line` (the name once, no
/// fields); every other event as `inner` formats it.
struct OutputLines<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for OutputLines<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::time::FormatTime;
        if event.metadata().target() != crate::supervise::logs::OUTPUT_TARGET {
            return self.0.format_event(ctx, w, event);
        }
        let mut line = OutputFields::default();
        event.record(&mut line);
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut w)?;
        writeln!(
            w,
            " {:>5} [{}] {}",
            event.metadata().level(),
            line.service,
            line.message
        )
    }
}

#[derive(Default)]
struct OutputFields {
    service: String,
    message: String,
}

impl tracing::field::Visit for OutputFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "service" {
            self.service = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "service" => self.service = format!("{value:?}"),
            _ => {}
        }
    }
}
