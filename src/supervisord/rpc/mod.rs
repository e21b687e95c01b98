//! supervisord's XML-RPC methods (`supervisor.*`, `system.*`) on top of
//! [`SupervisorHandle`], with supervisord's fault codes and texts, state names, struct
//! fields and ordering rules, so that `supervisorctl` and Cloudify cannot tell the
//! difference. This file: the dispatcher (`system.multicall`, arity, shutdown state) and
//! what the parts share; [`methods`] (the table), [`info`] (process info), [`control`]
//! (start / stop / signal), [`programs`] (reread / add / remove), [`logs`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::config::Root;
use crate::supervise::{
    LogTarget, Origin, ProcessState, RestartPolicy, ServiceInfo, ServiceSpec, Stream,
    SuperviseError, SupervisorHandle,
};

use super::xmlrpc::Value;
use super::{conf, values, MainLog, ProgramOverride};

mod control;
mod info;
mod logs;
mod methods;
mod programs;

use methods::*;
use programs::by_group;

/// supervisord's `Faults` codes.
pub mod faults {
    pub const UNKNOWN_METHOD: i32 = 1;
    pub const INCORRECT_PARAMETERS: i32 = 2;
    pub const BAD_ARGUMENTS: i32 = 3;
    pub const SIGNATURE_UNSUPPORTED: i32 = 4;
    pub const SHUTDOWN_STATE: i32 = 6;
    pub const BAD_NAME: i32 = 10;
    pub const BAD_SIGNAL: i32 = 11;
    pub const NO_FILE: i32 = 20;
    pub const NOT_EXECUTABLE: i32 = 21;
    pub const FAILED: i32 = 30;
    pub const ABNORMAL_TERMINATION: i32 = 40;
    pub const SPAWN_ERROR: i32 = 50;
    pub const ALREADY_STARTED: i32 = 60;
    pub const NOT_RUNNING: i32 = 70;
    pub const SUCCESS: i32 = 80;
    pub const ALREADY_ADDED: i32 = 90;
    pub const STILL_RUNNING: i32 = 91;
    pub const CANT_REREAD: i32 = 92;

    pub fn name(code: i32) -> &'static str {
        match code {
            UNKNOWN_METHOD => "UNKNOWN_METHOD",
            INCORRECT_PARAMETERS => "INCORRECT_PARAMETERS",
            BAD_ARGUMENTS => "BAD_ARGUMENTS",
            SIGNATURE_UNSUPPORTED => "SIGNATURE_UNSUPPORTED",
            SHUTDOWN_STATE => "SHUTDOWN_STATE",
            BAD_NAME => "BAD_NAME",
            BAD_SIGNAL => "BAD_SIGNAL",
            NO_FILE => "NO_FILE",
            NOT_EXECUTABLE => "NOT_EXECUTABLE",
            FAILED => "FAILED",
            ABNORMAL_TERMINATION => "ABNORMAL_TERMINATION",
            SPAWN_ERROR => "SPAWN_ERROR",
            ALREADY_STARTED => "ALREADY_STARTED",
            NOT_RUNNING => "NOT_RUNNING",
            SUCCESS => "SUCCESS",
            ALREADY_ADDED => "ALREADY_ADDED",
            STILL_RUNNING => "STILL_RUNNING",
            CANT_REREAD => "CANT_REREAD",
            _ => "UNKNOWN",
        }
    }
}

/// The API version supervisorctl insists on.
pub const API_VERSION: &str = "3.0";
/// The supervisord release whose behaviour this reproduces (Debian 12's package).
pub const SUPERVISOR_VERSION: &str = "4.2.5";

/// An XML-RPC fault: supervisord's `RPCError` (`NAME` or `NAME: detail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub code: i32,
    pub text: String,
}

impl Fault {
    pub fn new(code: i32) -> Fault {
        Fault {
            code,
            text: faults::name(code).to_string(),
        }
    }
    pub fn with(code: i32, extra: impl std::fmt::Display) -> Fault {
        Fault {
            code,
            text: format!("{}: {extra}", faults::name(code)),
        }
    }
}

type RpcResult = Result<Value, Fault>;

/// Settings the dispatcher needs to re-read supervisord files.
#[derive(Debug, Clone)]
pub struct RereadSource {
    /// supervisord.conf (host path).
    pub conf: PathBuf,
    pub root: Root,
    pub overrides: BTreeMap<String, ProgramOverride>,
}

/// The supervisord program sets: what the files say and what is in use.
struct Programs {
    /// `process_group_configs`: from the last (re)read, priority order.
    available: Vec<Arc<ServiceSpec>>,
    /// Groups added from supervisord files and not removed since, with their specs as added
    /// (shared with `available` until a re-read changes them).
    active: BTreeMap<String, Vec<Arc<ServiceSpec>>>,
}

/// The method dispatcher. Cloneable; one per socket.
#[derive(Clone)]
pub struct Rpc {
    handle: SupervisorHandle,
    source: Arc<RereadSource>,
    identifier: Arc<str>,
    mainlog: Option<MainLog>,
    /// Serialises reread/add/remove, so concurrent `update`s never see half a change.
    programs: Arc<Mutex<Programs>>,
}

/// Most bytes of captured output fetched from the supervisor per log call.
const CAPTURE_WINDOW: usize = 4 << 20;

const RUNNING_STATES: &[ProcessState] = &[
    ProcessState::Running,
    ProcessState::Backoff,
    ProcessState::Starting,
];
const STOPPED_STATES: &[ProcessState] = &[
    ProcessState::Stopped,
    ProcessState::Exited,
    ProcessState::Fatal,
    ProcessState::Unknown,
];
const SIGNALLABLE_STATES: &[ProcessState] = &[
    ProcessState::Running,
    ProcessState::Starting,
    ProcessState::Stopping,
];

/// Typed access to positional parameters; wrong types are `INCORRECT_PARAMETERS` faults,
/// as supervisord's `TypeError` handling gives for most of them (where it would answer
/// HTTP 500 instead, a fault is what clients handle better).
struct Params<'a>(&'a [Value]);

impl Params<'_> {
    fn string(&self, i: usize) -> Result<String, Fault> {
        match self.0.get(i) {
            Some(Value::Str(s)) => Ok(s.clone()),
            Some(_) => Err(Fault::new(faults::INCORRECT_PARAMETERS)),
            None => Err(Fault::new(faults::INCORRECT_PARAMETERS)),
        }
    }
    fn int(&self, i: usize) -> Result<i64, Fault> {
        match self.0.get(i) {
            Some(Value::Int(n)) => Ok(*n),
            // Python's int() also accepts digit strings.
            Some(Value::Str(s)) if s.trim().parse::<i64>().is_ok() => {
                Ok(s.trim().parse().expect("checked"))
            }
            Some(_) => Err(Fault::new(faults::INCORRECT_PARAMETERS)),
            None => Err(Fault::new(faults::INCORRECT_PARAMETERS)),
        }
    }
    /// An optional boolean (default true), with Python's truthiness for ints.
    fn wait(&self, i: usize) -> Result<bool, Fault> {
        match self.0.get(i) {
            None => Ok(true),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::Int(n)) => Ok(*n != 0),
            Some(_) => Err(Fault::new(faults::INCORRECT_PARAMETERS)),
        }
    }
    /// A signal: a name or a number, as string or int.
    fn signal(&self, i: usize) -> Result<String, Fault> {
        match self.0.get(i) {
            Some(Value::Int(n)) => Ok(n.to_string()),
            _ => self.string(i),
        }
    }
}

/// `group:name`, `group:*` or `name` → (group, Some(process) | None).
/// Whether a service is one of supervisord's programs. cfy-init's native services stay out
/// of this interface, so clients see exactly what supervisord would show them (they are
/// managed through the control API instead).
fn is_program(info: &ServiceInfo) -> bool {
    info.origin == Origin::Supervisord
}

fn split_namespec(name: &str) -> (String, Option<String>) {
    match name.split_once(':') {
        Some((g, "*")) => (g.to_string(), None),
        Some((g, p)) => (g.to_string(), Some(p.to_string())),
        None => (name.to_string(), Some(name.to_string())),
    }
}

fn make_namespec(group: &str, name: &str) -> String {
    if group == name {
        name.to_string()
    } else {
        format!("{group}:{name}")
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Rpc {
    /// `initial`: the programs read at boot and already given to the supervisor.
    pub fn new(
        handle: SupervisorHandle,
        source: RereadSource,
        identifier: &str,
        initial: Vec<Arc<ServiceSpec>>,
        mainlog: Option<MainLog>,
    ) -> Rpc {
        let available = initial;
        let active = by_group(&available).into_iter().collect();
        Rpc {
            handle,
            source: Arc::new(source),
            identifier: identifier.into(),
            mainlog,
            programs: Arc::new(Mutex::new(Programs { available, active })),
        }
    }

    pub fn mainlog(&self) -> Option<&MainLog> {
        self.mainlog.as_ref()
    }

    pub fn handle(&self) -> &SupervisorHandle {
        &self.handle
    }

    /// Answer one call (`system.multicall` included).
    pub async fn call(&self, method: &str, params: &[Value]) -> RpcResult {
        if method == "system.multicall" {
            check_arity(method, params)?;
            return self.multicall(params).await;
        }
        self.call_one(method, params).await
    }

    async fn multicall(&self, params: &[Value]) -> RpcResult {
        let Value::Array(calls) = &params[0] else {
            return Err(Fault::with(
                faults::INCORRECT_PARAMETERS,
                "calls must be an array",
            ));
        };
        let mut results = Vec::with_capacity(calls.len());
        for call in calls {
            let outcome = match call.member("methodName").and_then(Value::as_str) {
                None => Err(Fault::with(faults::INCORRECT_PARAMETERS, "No methodName")),
                Some("system.multicall") => Err(Fault::with(
                    faults::INCORRECT_PARAMETERS,
                    "Recursive system.multicall forbidden",
                )),
                Some(name) => {
                    let empty = Vec::new();
                    let ps = match call.member("params") {
                        Some(Value::Array(a)) => a,
                        _ => &empty,
                    };
                    self.call_one(name, ps).await
                }
            };
            // supervisord puts plain values (not one-element arrays) into the results.
            results.push(match outcome {
                Ok(v) => v,
                Err(f) => Value::structure([
                    ("faultCode", Value::Int(f.code.into())),
                    ("faultString", Value::Str(f.text)),
                ]),
            });
        }
        Ok(Value::Array(results))
    }

    async fn call_one(&self, method: &str, params: &[Value]) -> RpcResult {
        check_arity(method, params)?;
        if method.starts_with("supervisor.") && self.handle.is_shutting_down() {
            return Err(Fault::new(faults::SHUTDOWN_STATE));
        }
        let p = Params(params);
        let short = method.split_once('.').map(|(_, m)| m).unwrap_or(method);
        match method.split_once('.').map(|(ns, _)| ns) {
            Some("system") => self.system(short, &p),
            _ => self.supervisor(short, &p).await,
        }
    }

    fn system(&self, method: &str, p: &Params<'_>) -> RpcResult {
        match method {
            "listMethods" => Ok(Value::Array(
                METHODS.iter().map(|m| Value::str(m.name)).collect(),
            )),
            "methodHelp" => {
                let name = p.string(0)?;
                METHODS
                    .iter()
                    .find(|m| m.name == name)
                    .map(|m| Value::str(m.help))
                    .ok_or_else(|| Fault::new(faults::SIGNATURE_UNSUPPORTED))
            }
            "methodSignature" => {
                let name = p.string(0)?;
                METHODS
                    .iter()
                    .find(|m| m.name == name)
                    .map(|m| Value::Array(m.sig.iter().map(|t| Value::str(*t)).collect()))
                    .ok_or_else(|| Fault::new(faults::SIGNATURE_UNSUPPORTED))
            }
            _ => Err(Fault::new(faults::UNKNOWN_METHOD)),
        }
    }

    async fn supervisor(&self, method: &str, p: &Params<'_>) -> RpcResult {
        match method {
            "getAPIVersion" | "getVersion" => Ok(Value::str(API_VERSION)),
            "getSupervisorVersion" => Ok(Value::str(SUPERVISOR_VERSION)),
            "getIdentification" => Ok(Value::str(&*self.identifier)),
            "getState" => Ok(Value::structure([
                ("statecode", Value::Int(1)),
                ("statename", Value::str("RUNNING")),
            ])),
            "getPID" => Ok(Value::Int(std::process::id().into())),
            "readLog" | "readMainLog" => self.read_main_log(p.int(0)?, p.int(1)?),
            "clearLog" => match &self.mainlog {
                Some(l) => {
                    l.clear();
                    Ok(Value::Bool(true))
                }
                None => Err(Fault::new(faults::NO_FILE)),
            },
            "shutdown" => {
                self.handle.shutdown();
                Ok(Value::Bool(true))
            }
            "reloadConfig" => self.reload_config().await,
            "addProcessGroup" => self.add_group(&p.string(0)?).await,
            "removeProcessGroup" => self.remove_group(&p.string(0)?).await,
            "getProcessInfo" => self.get_process_info(&p.string(0)?).await,
            "getAllProcessInfo" => self.get_all_process_info().await,
            "getAllConfigInfo" => self.get_all_config_info().await,
            "startProcess" => self.start_process(&p.string(0)?, p.wait(1)?).await,
            "startProcessGroup" => self.start_group(&p.string(0)?, p.wait(1)?).await,
            "startAllProcesses" => self.start_all(p.wait(0)?).await,
            "stopProcess" => self.stop_process(&p.string(0)?, p.wait(1)?).await,
            "stopProcessGroup" => self.stop_group(&p.string(0)?, p.wait(1)?).await,
            "stopAllProcesses" => self.stop_all(p.wait(0)?).await,
            "signalProcess" => self.signal_process(&p.string(0)?, &p.signal(1)?).await,
            "signalProcessGroup" => self.signal_group(&p.string(0)?, &p.signal(1)?).await,
            "signalAllProcesses" => self.signal_all(&p.signal(0)?).await,
            "readProcessStdoutLog" | "readProcessLog" => {
                self.read_process_log(&p.string(0)?, p.int(1)?, p.int(2)?, Stream::Stdout)
                    .await
            }
            "readProcessStderrLog" => {
                self.read_process_log(&p.string(0)?, p.int(1)?, p.int(2)?, Stream::Stderr)
                    .await
            }
            "tailProcessStdoutLog" | "tailProcessLog" => {
                self.tail_process_log(&p.string(0)?, p.int(1)?, p.int(2)?, Stream::Stdout)
                    .await
            }
            "tailProcessStderrLog" => {
                self.tail_process_log(&p.string(0)?, p.int(1)?, p.int(2)?, Stream::Stderr)
                    .await
            }
            _ => Err(Fault::new(faults::UNKNOWN_METHOD)),
        }
    }
}

/// Check the method exists and got a number of parameters it accepts.
fn check_arity(method: &str, params: &[Value]) -> Result<(), Fault> {
    let Some(doc) = METHODS.iter().find(|m| m.name == method) else {
        return Err(Fault::new(faults::UNKNOWN_METHOD));
    };
    let max = doc.sig.len() - 1;
    let min = max - doc.optional;
    if params.len() < min || params.len() > max {
        return Err(Fault::new(faults::INCORRECT_PARAMETERS));
    }
    Ok(())
}

fn fault_of(e: SuperviseError, name: &str) -> Fault {
    match e {
        SuperviseError::BadName(_) => Fault::with(faults::BAD_NAME, name),
        SuperviseError::AlreadyStarted(_) => Fault::with(faults::ALREADY_STARTED, name),
        SuperviseError::NotRunning(_) => Fault::with(faults::NOT_RUNNING, name),
        SuperviseError::SpawnError { .. } => Fault::with(faults::SPAWN_ERROR, name),
        SuperviseError::AbnormalTermination(_) => Fault::with(faults::ABNORMAL_TERMINATION, name),
        SuperviseError::Failed(_) => Fault::with(faults::FAILED, name),
        SuperviseError::BadSignal(s) => Fault::with(faults::BAD_SIGNAL, s),
        SuperviseError::BadArguments(s) => Fault::with(faults::BAD_ARGUMENTS, s),
        SuperviseError::ShuttingDown => Fault::new(faults::SHUTDOWN_STATE),
    }
}

#[cfg(test)]
mod tests {
    use super::info::*;
    use super::logs::*;
    use super::*;

    #[test]
    fn namespecs() {
        assert_eq!(split_namespec("a"), ("a".into(), Some("a".into())));
        assert_eq!(split_namespec("g:*"), ("g".into(), None));
        assert_eq!(split_namespec("g:p"), ("g".into(), Some("p".into())));
        assert_eq!(make_namespec("a", "a"), "a");
        assert_eq!(make_namespec("g", "p"), "g:p");
    }

    #[test]
    fn fault_texts_match_supervisord() {
        assert_eq!(Fault::with(faults::BAD_NAME, "x").text, "BAD_NAME: x");
        assert_eq!(Fault::new(faults::SHUTDOWN_STATE).text, "SHUTDOWN_STATE");
        assert_eq!(faults::name(12345), "UNKNOWN");
    }

    #[test]
    fn arity() {
        assert!(check_arity("supervisor.startProcess", &[Value::str("a")]).is_ok());
        assert_eq!(
            check_arity("supervisor.getProcessInfo", &[])
                .unwrap_err()
                .code,
            faults::INCORRECT_PARAMETERS
        );
        assert_eq!(
            check_arity("supervisor.nope", &[]).unwrap_err().code,
            faults::UNKNOWN_METHOD
        );
        assert_eq!(
            check_arity("supervisor._private", &[]).unwrap_err().code,
            faults::UNKNOWN_METHOD
        );
    }

    #[test]
    fn uptime_like_timedelta() {
        assert_eq!(uptime(5), "0:00:05");
        assert_eq!(uptime(3661), "1:01:01");
        assert_eq!(uptime(86400 + 5), "1 day, 0:00:05");
        assert_eq!(uptime(2 * 86400), "2 days, 0:00:00");
    }

    #[test]
    fn read_window_like_read_file() {
        // 10 bytes written, the last 6 retained.
        let buf = b"456789";
        assert_eq!(read_window(buf, 10, -3, 0).unwrap(), "789");
        assert_eq!(read_window(buf, 10, -100, 0).unwrap(), "456789");
        assert_eq!(read_window(buf, 10, 5, 2).unwrap(), "56");
        assert_eq!(read_window(buf, 10, 0, 0).unwrap(), "456789");
        assert_eq!(
            read_window(buf, 10, -1, 5).unwrap_err().code,
            faults::BAD_ARGUMENTS
        );
        assert_eq!(
            read_window(buf, 10, 1, -5).unwrap_err().code,
            faults::BAD_ARGUMENTS
        );
    }

    #[test]
    fn tail_window_like_tail_file() {
        let buf = b"0123456789";
        assert_eq!(tail_window(buf, 10, 0, 4), ("6789".into(), 10, true));
        // Like tailFile, an offset short of the end rewinds to `size - length`.
        assert_eq!(
            tail_window(buf, 10, 8, 1600),
            ("0123456789".into(), 10, false)
        );
        assert_eq!(tail_window(buf, 10, 10, 1600), ("".into(), 10, false));
        assert_eq!(tail_window(b"", 0, 0, 1600), ("".into(), 0, false));
    }

    #[test]
    fn every_method_has_a_signature_with_a_return_type() {
        for m in METHODS {
            assert!(!m.sig.is_empty(), "{}", m.name);
            assert!(m.help.contains("@return"), "{}", m.name);
        }
        let mut names: Vec<_> = METHODS.iter().map(|m| m.name).collect();
        let sorted = {
            let mut s = names.clone();
            s.sort();
            s
        };
        assert_eq!(names, sorted, "listMethods answers in sorted order");
        names.dedup();
        assert_eq!(names.len(), METHODS.len());
    }
}
