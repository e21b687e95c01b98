//! The service supervisor: one state machine per service, dependency order, readiness
//! checks, restarts with back-off, crash-loop limits and ordered shutdown.
//!
//! One model serves every source of service definitions: native YAML services
//! ([`SuperviseConfig::services`]) and supervisord `[program:x]` sections (converted by
//! [`crate::supervisord`]) both become a [`ServiceSpec`]. Process states use supervisord's
//! names ([`ProcessState`]) so the XML-RPC interface needs no translation.
//!
//! Other modules talk to the running supervisor only through [`SupervisorHandle`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Root, Section};

mod engine;
mod handle;
pub mod logs;
pub mod order;
pub mod readiness;
mod runner;
pub mod spawn;
pub mod tree;
pub use handle::{Origin, SupervisorHandle, SupervisorStats};
pub use runner::{run, RunError, Runner, Task};

/// `supervise:` section of the config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SuperviseConfig {
    /// Overall shutdown deadline: after it every remaining process group gets SIGKILL.
    /// The default leaves a margin inside `docker stop`'s 10 s.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub shutdown_deadline: Duration,
    /// Where catchable signals other than the shutdown and reload ones go: `main` (the main
    /// process in `run -- CMD` mode, else every service) or `all`.
    pub forward_signals: ForwardSignals,
    /// Native service definitions.
    pub services: Vec<ServiceSpec>,
    /// Count an init that supervises no service at all as ready. Off by default: an image
    /// without any service (no `/etc/supervisord.conf`, no native service) is most likely
    /// broken, so `/readyz` answers 503 "no services defined".
    pub ready_without_services: bool,
}

impl Default for SuperviseConfig {
    fn default() -> Self {
        Self {
            shutdown_deadline: Duration::from_secs(9),
            forward_signals: ForwardSignals::Main,
            services: Vec::new(),
            ready_without_services: false,
        }
    }
}

impl Section for SuperviseConfig {
    fn reroot(&mut self, root: &Root) {
        for s in &mut self.services {
            s.reroot(root);
        }
    }

    fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.services {
            if !seen.insert(s.name.as_str()) {
                return Err(format!(
                    "supervise.services: {:?} is defined twice; names must be unique",
                    s.name
                ));
            }
            s.validate()
                .map_err(|e| format!("supervise.services[{}]: {e}", s.name))?;
        }
        if let Some(cycle) = order::find_cycle(&self.services) {
            return Err(format!(
                "supervise.services: dependency cycle {cycle}; remove one depends_on"
            ));
        }
        Ok(())
    }
}

/// Who receives forwarded signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ForwardSignals {
    Main,
    All,
}

/// One supervised service (a long-running process or a one-shot task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Unique name; also the `[name]` prefix of its log lines.
    pub name: String,
    /// supervisord process group (defaults to the name).
    #[serde(default)]
    pub group: Option<String>,
    /// Program and arguments, executed directly (no shell unless `shell: true`).
    pub command: Vec<String>,
    /// Run `command` joined by spaces through `/bin/sh -c`.
    #[serde(default)]
    pub shell: bool,
    /// User name or uid to run as (default: the init's own).
    #[serde(default)]
    pub user: Option<String>,
    /// Group name or gid (default: the user's primary group).
    #[serde(default, rename = "user_group")]
    pub run_group: Option<String>,
    /// Supplementary groups (default: the user's groups from /etc/group).
    #[serde(default)]
    pub supplementary_groups: Option<Vec<String>>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Files of `KEY=value` lines read at each start (host paths).
    #[serde(default)]
    pub env_files: Vec<PathBuf>,
    /// Working directory (host path).
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// umask, octal as a string ("0027") or a number.
    #[serde(default)]
    pub umask: Option<String>,
    /// Resource limits by name (`nofile`, `nproc`, `core`, ...), soft = hard.
    #[serde(default)]
    pub rlimits: BTreeMap<String, u64>,
    /// Services that must be ready (or, for tasks, completed) before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// `longrun` (default), `oneshot` (run to completion before dependents) or
    /// `after-ready` (one-shot run once per store, guarded by `marker`).
    #[serde(default)]
    pub kind: ServiceKind,
    /// For `after-ready` tasks: marker file (host path) created on success; the task is
    /// skipped while it exists.
    #[serde(default)]
    pub marker: Option<PathBuf>,
    /// How to tell that the service is ready; checked for as long as it runs.
    #[serde(default)]
    pub readiness: Readiness,
    /// Optional liveness check: after `failure_threshold` failures in a row the service is
    /// restarted (stopped with its stop signal, then started again; with `restart: never`
    /// only stopped).
    #[serde(default)]
    pub liveness: Option<Liveness>,
    /// Seconds the process must stay up to count as started (supervisord `startsecs`).
    #[serde(default = "defaults::startsecs", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub startsecs: Duration,
    /// Failed start attempts before FATAL (supervisord `startretries`).
    #[serde(default = "defaults::startretries")]
    pub startretries: u32,
    /// When to restart after the process exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Exit codes that count as expected (for `on-failure`).
    #[serde(default = "defaults::exit_codes")]
    pub exit_codes: Vec<i32>,
    /// Back-off between restarts: starts at `initial`, grows (see `growth`) up to `max`.
    #[serde(default)]
    pub backoff: Backoff,
    /// More than `max_restarts` restarts within `window` marks the service failed (FATAL).
    #[serde(default)]
    pub crash_loop: CrashLoop,
    /// A required service that fails for good shuts everything down, non-zero exit.
    #[serde(default)]
    pub required: bool,
    /// Start at boot (supervisord `autostart`).
    #[serde(default = "defaults::yes")]
    pub autostart: bool,
    /// supervisord `priority`: lower starts first and stops last, among equals.
    #[serde(default = "defaults::priority")]
    pub priority: i32,
    /// Signal that asks the service to stop (`TERM`, `INT`, `QUIT`, `HUP`, `USR1`, ...).
    #[serde(default = "defaults::stop_signal")]
    pub stop_signal: String,
    /// Time between the stop signal and SIGKILL.
    #[serde(default = "defaults::stop_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub stop_timeout: Duration,
    /// Send the stop signal to the whole process group (supervisord `stopasgroup`).
    #[serde(default)]
    pub stop_as_group: bool,
    /// Where stdout goes.
    #[serde(default)]
    pub stdout: LogTarget,
    /// Where stderr goes.
    #[serde(default)]
    pub stderr: LogTarget,
    /// Send stderr to stdout's target (supervisord `redirect_stderr`).
    #[serde(default)]
    pub redirect_stderr: bool,
    /// Level at which stderr lines logged into the init's log are written (`error`, `warn`,
    /// `info`, `debug`, `trace`); stdout lines are `info`.
    #[serde(default)]
    pub stderr_level: OutputLevel,
    /// Most lines per second (and burst) this service may write into the init's log; the
    /// rest are dropped, counted (`cfy_init_service_log_dropped_lines`) and reported in one
    /// line. `tail` still sees everything.
    #[serde(default)]
    pub log_rate_limit: LogRateLimit,
    /// Where the definition came from (`config` or a supervisord file path), for messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

mod defaults {
    use std::time::Duration;
    pub fn startsecs() -> Duration {
        Duration::from_secs(1)
    }
    pub fn startretries() -> u32 {
        3
    }
    pub fn exit_codes() -> Vec<i32> {
        vec![0]
    }
    pub fn yes() -> bool {
        true
    }
    pub fn priority() -> i32 {
        999
    }
    pub fn stop_signal() -> String {
        "TERM".into()
    }
    pub fn stop_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

impl ServiceSpec {
    /// Re-root the host paths of this service (not its command line).
    pub fn reroot(&mut self, root: &Root) {
        for f in &mut self.env_files {
            root.apply(f);
        }
        for p in [&mut self.working_dir, &mut self.marker]
            .into_iter()
            .flatten()
        {
            root.apply(p);
        }
        self.readiness.reroot(root);
        if let Some(ReadinessCheck::File { path }) = self.liveness.as_mut().map(|l| &mut l.check) {
            root.apply(path);
        }
        self.stdout.reroot(root);
        self.stderr.reroot(root);
    }

    /// Check what serde cannot: the message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.contains(['/', ':', ' ']) {
            return Err("name must be non-empty, without '/', ':' or spaces".into());
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err("command is empty; give the program and its arguments".into());
        }
        if crate::pid1::parse_signal(&self.stop_signal).is_none() {
            return Err(format!(
                "stop_signal {:?} is not a signal name (TERM, INT, QUIT, HUP, USR1, ...)",
                self.stop_signal
            ));
        }
        if let Some(m) = &self.umask {
            spawn::parse_umask(m)?;
        }
        for name in self.rlimits.keys() {
            spawn::rlimit_resource(name)?;
        }
        if self.kind == ServiceKind::AfterReady && self.marker.is_none() {
            return Err("kind after-ready needs `marker` (the run-once file)".into());
        }
        if self.backoff.initial.is_zero() || self.backoff.max < self.backoff.initial {
            return Err("backoff needs 0 < initial <= max".into());
        }
        let r = &self.readiness;
        if r.failure_threshold == 0 || r.success_threshold == 0 || r.period.is_zero() {
            return Err(
                "readiness needs failure_threshold >= 1, success_threshold >= 1 and a period > 0"
                    .into(),
            );
        }
        if let Some(l) = &self.liveness {
            if l.check == ReadinessCheck::Started {
                return Err(
                    "liveness needs a check (tcp, http, exec or file), not `started`".into(),
                );
            }
            if l.failure_threshold == 0 || l.period.is_zero() {
                return Err("liveness needs failure_threshold >= 1 and a period > 0".into());
            }
        }
        Ok(())
    }

    /// The supervisord group name.
    pub fn group_name(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.name)
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    #[default]
    Longrun,
    Oneshot,
    AfterReady,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    /// Delay before the first retry.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub initial: Duration,
    /// Longest delay.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max: Duration,
    /// How the delay grows with each failure in a row: `exponential` (initial, 2x, 4x ...)
    /// or `linear` (initial, 2x, 3x ...: supervisord's 1 s, 2 s, 3 s, which its programs get).
    pub growth: BackoffGrowth,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            growth: BackoffGrowth::Exponential,
        }
    }
}

/// How a back-off delay grows: see [`Backoff::growth`].
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum BackoffGrowth {
    #[default]
    Exponential,
    Linear,
}

impl Backoff {
    /// supervisord's: the n-th failed start in a row waits n seconds.
    pub fn supervisord() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(24 * 3600),
            growth: BackoffGrowth::Linear,
        }
    }

    /// The delay after the `n`-th failure in a row (n >= 1).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = match self.growth {
            BackoffGrowth::Exponential => 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX),
            BackoffGrowth::Linear => n.max(1),
        };
        self.initial
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CrashLoop {
    pub max_restarts: u32,
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub window: Duration,
}

impl Default for CrashLoop {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// A readiness check and its timing. Until the first pass it runs every `interval` (and
/// `retries` failures in a row make the start fail); from then on every `period` for as
/// long as the service runs, with Kubernetes' semantics: `failure_threshold` failures in a
/// row make the service not ready, `success_threshold` passes in a row ready again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Readiness {
    /// What to check.
    pub check: ReadinessCheck,
    /// Time between checks until the first pass.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// Time one check may take before it counts as failed (an exec check is killed).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Failed checks in a row before the start counts as failed (0 = keep trying).
    pub retries: u32,
    /// Time between checks once the service has passed once.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub period: Duration,
    /// Failed checks in a row (after the first pass) that make the service not ready.
    pub failure_threshold: u32,
    /// Passed checks in a row that make a not-ready service ready again.
    pub success_threshold: u32,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            check: ReadinessCheck::Started,
            interval: Duration::from_millis(250),
            timeout: Duration::from_secs(2),
            retries: 0,
            period: Duration::from_secs(10),
            failure_threshold: 3,
            success_threshold: 1,
        }
    }
}

/// A liveness check: run every `period` once the service is RUNNING (after
/// `initial_delay`); `failure_threshold` failures in a row restart the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Liveness {
    /// What to check (`started` is not allowed here).
    pub check: ReadinessCheck,
    /// Time after the service is RUNNING before the first check.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub initial_delay: Duration,
    /// Time between checks.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub period: Duration,
    /// Time one check may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Failed checks in a row that restart the service.
    pub failure_threshold: u32,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            check: ReadinessCheck::Started,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            failure_threshold: 3,
        }
    }
}

impl Readiness {
    fn reroot(&mut self, root: &Root) {
        if let ReadinessCheck::File { path } = &mut self.check {
            root.apply(path);
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "type", deny_unknown_fields)]
pub enum ReadinessCheck {
    /// Ready once the process is up for `startsecs`.
    #[default]
    Started,
    /// Ready when a TCP connect to `address` (host:port) succeeds.
    Tcp { address: String },
    /// Ready when GET `url` answers 2xx.
    Http { url: String },
    /// Ready when `command` exits 0.
    Exec { command: Vec<String> },
    /// Ready when `path` exists (host path).
    File { path: PathBuf },
}

/// Log level of a service's stderr lines.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OutputLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

/// A token bucket for logged lines: `lines_per_second` on average, `burst` at once;
/// `lines_per_second: 0` = no limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogRateLimit {
    pub lines_per_second: u32,
    pub burst: u32,
}

impl Default for LogRateLimit {
    fn default() -> Self {
        Self {
            lines_per_second: 1000,
            burst: 10000,
        }
    }
}

/// Where a child's output goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "type", deny_unknown_fields)]
pub enum LogTarget {
    /// Line by line into the init's log, prefixed `[name]` (supervisord's `/dev/fd/1|2`).
    #[default]
    Log,
    /// A file with size-based rotation (host path).
    File {
        path: PathBuf,
        max_bytes: u64,
        backups: u32,
    },
    /// Discarded.
    Null,
}

impl LogTarget {
    fn reroot(&mut self, root: &Root) {
        if let LogTarget::File { path, .. } = self {
            root.apply(path);
        }
    }
}

/// supervisord's process states, with its numeric codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProcessState {
    Stopped = 0,
    Starting = 10,
    Running = 20,
    Backoff = 30,
    Stopping = 40,
    Exited = 100,
    Fatal = 200,
    Unknown = 1000,
}

impl ProcessState {
    pub fn code(self) -> i32 {
        self as i32
    }
    pub fn name(self) -> &'static str {
        match self {
            ProcessState::Stopped => "STOPPED",
            ProcessState::Starting => "STARTING",
            ProcessState::Running => "RUNNING",
            ProcessState::Backoff => "BACKOFF",
            ProcessState::Stopping => "STOPPING",
            ProcessState::Exited => "EXITED",
            ProcessState::Fatal => "FATAL",
            ProcessState::Unknown => "UNKNOWN",
        }
    }
}

/// A point-in-time view of one service, as reported by status APIs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub group: String,
    pub state: ProcessState,
    /// Readiness check passed (for tasks: completed successfully).
    pub ready: bool,
    pub pid: Option<u32>,
    /// Unix seconds of the last start / stop (0 = never).
    pub start_time: u64,
    pub stop_time: u64,
    /// Raw wait status of the last exit, and its exit code (or 128+signal).
    pub last_exit_code: Option<i32>,
    /// The exit status as supervisord reports it: the exit code of the last exit of a start
    /// that got up (or was stopped), -1 when a signal killed it, 0 since a spawn or after
    /// an exit "too quickly" (supervisord clears it then).
    #[serde(default)]
    pub exitstatus: i32,
    pub restarts: u64,
    /// Why the last spawn failed, if it did.
    pub spawn_error: Option<String>,
    /// supervisord-style description ("pid 12, uptime 0:01:02", "Exited too quickly", ...).
    pub description: String,
    /// Why it is in its state, or why it is not ready ("readiness check failed 3 times in a
    /// row: ...", "waiting for postgres", "completed"); None when running and ready.
    #[serde(default)]
    pub reason: Option<String>,
    pub required: bool,
    /// Started at boot (supervisord `autostart`).
    #[serde(default)]
    pub autostart: bool,
    pub kind: ServiceKind,
    /// Where the definition came from; supervisord's XML-RPC shows only its own programs.
    pub origin: Origin,
    /// Output lines dropped by its `log_rate_limit` (since the init started).
    #[serde(default)]
    pub log_dropped_lines: u64,
}

/// The services whose readiness makes the init ready (docs/operations.md, "What ready
/// means"): the required ones when any service is marked `required`, else every autostart
/// one; after-ready tasks never count (they wait for readiness themselves). A one-shot
/// counts as ready once it completed, a `restart: never` service once it exited with an
/// expected code (Cloudify's `cloudify-starter`).
pub fn counts_for_readiness(infos: &[ServiceInfo]) -> impl Iterator<Item = &ServiceInfo> {
    let any_required = infos.iter().any(|s| s.required);
    infos.iter().filter(move |s| {
        s.kind != ServiceKind::AfterReady
            && if any_required {
                s.required
            } else {
                s.autostart
            }
    })
}

/// Which output stream of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Errors of supervisor operations; each maps onto a supervisord fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperviseError {
    #[error("no such service: {0}")]
    BadName(String),
    #[error("{0}: already started")]
    AlreadyStarted(String),
    #[error("{0}: not running")]
    NotRunning(String),
    #[error("{name}: cannot start: {reason}")]
    SpawnError { name: String, reason: String },
    #[error("{0}: exited before it was up (abnormal termination)")]
    AbnormalTermination(String),
    #[error("{0}: failed for good")]
    Failed(String),
    #[error("{0}: bad signal name")]
    BadSignal(String),
    #[error("{0}: bad argument")]
    BadArguments(String),
    #[error("the supervisor is shutting down")]
    ShuttingDown,
}

/// What applying a new set of definitions changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpdateReport {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// Output captured for `tail`: the last bytes a service wrote on one stream.
#[derive(Debug, Clone, Default)]
pub struct LogTail {
    /// The bytes, ending at `end_offset`.
    pub bytes: Vec<u8>,
    /// Total bytes ever written on this stream (supervisord's offset).
    pub end_offset: u64,
    /// True when older bytes were dropped from the buffer.
    pub overflow: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> SuperviseConfig {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn validation_names_the_problem_and_the_fix() {
        let cases = [
            (
                "services: [{name: a, command: [x]}, {name: a, command: [y]}]",
                "\"a\" is defined twice",
            ),
            (
                "services: [{name: a, command: [x], depends_on: [b]}, {name: b, command: [x], depends_on: [a]}]",
                "dependency cycle a -> b -> a",
            ),
            ("services: [{name: a, command: []}]", "services[a]: command is empty"),
            (
                "services: [{name: a, command: [x], stop_signal: NOPE}]",
                "stop_signal \"NOPE\" is not a signal name",
            ),
            ("services: [{name: a, command: [x], umask: '99'}]", "bad umask"),
            ("services: [{name: a, command: [x], rlimits: {files: 1}}]", "unknown rlimit"),
            (
                "services: [{name: a, command: [x], kind: after-ready}]",
                "kind after-ready needs `marker`",
            ),
        ];
        for (yaml, want) in cases {
            let err = config(yaml).validate().unwrap_err();
            assert!(err.contains(want), "{yaml}: {err}");
        }
        config("services: [{name: a, command: [x], stop_signal: RTMIN+3, depends_on: [supervisord-prog]}]")
            .validate()
            .unwrap();
    }

    #[test]
    fn host_paths_are_rerooted_but_commands_are_not() {
        let mut c = config(
            "services: [{name: a, command: [/bin/x], working_dir: /w, env_files: [/e], \
             kind: after-ready, marker: /m, stdout: {type: file, path: /l, max_bytes: 1, backups: 1}, \
             readiness: {check: {type: file, path: /r}}}]",
        );
        c.reroot(&Root::new("/R"));
        let s = &c.services[0];
        assert_eq!(s.command[0], "/bin/x");
        assert_eq!(s.working_dir.as_deref(), Some(std::path::Path::new("/R/w")));
        assert_eq!(s.env_files[0], PathBuf::from("/R/e"));
        assert_eq!(s.marker.as_deref(), Some(std::path::Path::new("/R/m")));
        assert!(
            matches!(&s.stdout, LogTarget::File { path, .. } if path == std::path::Path::new("/R/l"))
        );
        assert!(
            matches!(&s.readiness.check, ReadinessCheck::File { path } if path == std::path::Path::new("/R/r"))
        );
    }
}
