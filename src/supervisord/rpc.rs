//! supervisord's XML-RPC methods (`supervisor.*`, `system.*`) on top of
//! [`SupervisorHandle`], with supervisord's fault codes and texts, state names, struct
//! fields and ordering rules, so that `supervisorctl` and Cloudify cannot tell the
//! difference.

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
    available: Vec<ServiceSpec>,
    /// Groups added from supervisord files and not removed since, with their specs as added.
    active: BTreeMap<String, Vec<ServiceSpec>>,
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

/// One row of the method table: name, `[return, params...]` types, optional trailing
/// params, help text.
struct MethodDoc {
    name: &'static str,
    sig: &'static [&'static str],
    optional: usize,
    help: &'static str,
}

const fn m(
    name: &'static str,
    sig: &'static [&'static str],
    optional: usize,
    help: &'static str,
) -> MethodDoc {
    MethodDoc {
        name,
        sig,
        optional,
        help,
    }
}

const METHODS: &[MethodDoc] = &[
    m("supervisor.addProcessGroup", &["boolean", "string"], 0, "Update the config for a running process from config file.\n\n@param string name         name of process group to add\n@return boolean result     true if successful"),
    m("supervisor.clearLog", &["boolean"], 0, "Clear the main log.\n\n@return boolean result always returns True unless error"),
    m("supervisor.getAPIVersion", &["string"], 0, "Return the version of the RPC API used by supervisord\n\n@return string version id"),
    m("supervisor.getAllConfigInfo", &["array"], 0, "Get info about all available process configurations. Each struct\nrepresents a single process (i.e. groups get flattened).\n\n@return array result  An array of process config info structs"),
    m("supervisor.getAllProcessInfo", &["array"], 0, "Get info about all processes\n\n@return array result  An array of process status results"),
    m("supervisor.getIdentification", &["string"], 0, "Return identifying string of supervisord\n\n@return string identifier identifying string"),
    m("supervisor.getPID", &["int"], 0, "Return the PID of supervisord\n\n@return int PID"),
    m("supervisor.getProcessInfo", &["struct", "string"], 0, "Get info about a process named name\n\n@param string name The name of the process (or 'group:name')\n@return struct result     A structure containing data about the process"),
    m("supervisor.getState", &["struct"], 0, "Return current state of supervisord as a struct\n\n@return struct A struct with keys int statecode, string statename"),
    m("supervisor.getSupervisorVersion", &["string"], 0, "Return the version of the supervisor package in use by supervisord\n\n@return string version id"),
    m("supervisor.getVersion", &["string"], 0, "Return the version of the RPC API used by supervisord\n\n@return string version id"),
    m("supervisor.readLog", &["string", "int", "int"], 0, "Read length bytes from the main log starting at offset\n\n@param int offset         offset to start reading from.\n@param int length         number of bytes to read from the log.\n@return string result     Bytes of log"),
    m("supervisor.readMainLog", &["string", "int", "int"], 0, "Read length bytes from the main log starting at offset\n\n@param int offset         offset to start reading from.\n@param int length         number of bytes to read from the log.\n@return string result     Bytes of log"),
    m("supervisor.readProcessLog", &["string", "string", "int", "int"], 0, "Read length bytes from name's stdout log starting at offset\n\n@param string name        the name of the process (or 'group:name')\n@param int offset         offset to start reading from.\n@param int length         number of bytes to read from the log.\n@return string result     Bytes of log"),
    m("supervisor.readProcessStderrLog", &["string", "string", "int", "int"], 0, "Read length bytes from name's stderr log starting at offset\n\n@param string name        the name of the process (or 'group:name')\n@param int offset         offset to start reading from.\n@param int length         number of bytes to read from the log.\n@return string result     Bytes of log"),
    m("supervisor.readProcessStdoutLog", &["string", "string", "int", "int"], 0, "Read length bytes from name's stdout log starting at offset\n\n@param string name        the name of the process (or 'group:name')\n@param int offset         offset to start reading from.\n@param int length         number of bytes to read from the log.\n@return string result     Bytes of log"),
    m("supervisor.reloadConfig", &["array"], 0, "Reload the configuration.\n\n@return array result  [[added, changed, removed]]"),
    m("supervisor.removeProcessGroup", &["boolean", "string"], 0, "Remove a stopped process from the active configuration.\n\n@param string name         name of process group to remove\n@return boolean result     Indicates whether the removal was successful"),
    m("supervisor.shutdown", &["boolean"], 0, "Shut down the supervisor process\n\n@return boolean result always returns True unless error"),
    m("supervisor.signalAllProcesses", &["array", "string"], 0, "Send a signal to all processes in the process list\n\n@param string signal  Signal to send, as name ('HUP') or number ('1')\n@return array         An array of process status info structs"),
    m("supervisor.signalProcess", &["boolean", "string", "string"], 0, "Send an arbitrary UNIX signal to the process named by name\n\n@param string name    Name of the process to signal (or 'group:name')\n@param string signal  Signal to send, as name ('HUP') or number ('1')\n@return boolean"),
    m("supervisor.signalProcessGroup", &["array", "string", "string"], 0, "Send a signal to all processes in the group named 'name'\n\n@param string name    The group name\n@param string signal  Signal to send, as name ('HUP') or number ('1')\n@return array"),
    m("supervisor.startAllProcesses", &["array", "boolean"], 1, "Start all processes listed in the configuration file\n\n@param boolean wait    Wait for each process to be fully started\n@return array result   An array of process status info structs"),
    m("supervisor.startProcess", &["boolean", "string", "boolean"], 1, "Start a process\n\n@param string name Process name (or ``group:name``, or ``group:*``)\n@param boolean wait Wait for process to be fully started\n@return boolean result     Always true unless error"),
    m("supervisor.startProcessGroup", &["array", "string", "boolean"], 1, "Start all processes in the group named 'name'\n\n@param string name     The group name\n@param boolean wait    Wait for each process to be fully started\n@return array result   An array of process status info structs"),
    m("supervisor.stopAllProcesses", &["array", "boolean"], 1, "Stop all processes in the process list\n\n@param  boolean wait   Wait for each process to be fully stopped\n@return array result   An array of process status info structs"),
    m("supervisor.stopProcess", &["boolean", "string", "boolean"], 1, "Stop a process named by name\n\n@param string name  The name of the process to stop (or 'group:name')\n@param boolean wait        Wait for the process to be fully stopped\n@return boolean result     Always return True unless error"),
    m("supervisor.stopProcessGroup", &["array", "string", "boolean"], 1, "Stop all processes in the process group named 'name'\n\n@param string name     The group name\n@param boolean wait    Wait for each process to be fully stopped\n@return array result   An array of process status info structs"),
    m("supervisor.tailProcessLog", &["array", "string", "int", "int"], 0, "Provides a more efficient way to tail the (stdout) log than\nreadProcessStdoutLog().\n\n@param string name         the name of the process (or 'group:name')\n@param int offset          offset to start reading from\n@param int length          maximum number of bytes to return\n@return array result       [string bytes, int offset, bool overflow]"),
    m("supervisor.tailProcessStderrLog", &["array", "string", "int", "int"], 0, "Provides a more efficient way to tail the (stderr) log than\nreadProcessStderrLog().\n\n@param string name         the name of the process (or 'group:name')\n@param int offset          offset to start reading from\n@param int length          maximum number of bytes to return\n@return array result       [string bytes, int offset, bool overflow]"),
    m("supervisor.tailProcessStdoutLog", &["array", "string", "int", "int"], 0, "Provides a more efficient way to tail the (stdout) log than\nreadProcessStdoutLog().\n\n@param string name         the name of the process (or 'group:name')\n@param int offset          offset to start reading from\n@param int length          maximum number of bytes to return\n@return array result       [string bytes, int offset, bool overflow]"),
    m("system.listMethods", &["array"], 0, "Return an array listing the available method names\n\n@return array result  An array of method names available (strings)."),
    m("system.methodHelp", &["string", "string"], 0, "Return a string showing the method's documentation\n\n@param string name   The name of the method.\n@return string result The documentation for the method name."),
    m("system.methodSignature", &["array", "string"], 0, "Return an array describing the method signature in the\nform [rtype, ptype, ptype...] where rtype is the return data type\nof the method, and ptypes are the parameter data types that the\nmethod accepts in method argument order.\n\n@param string name  The name of the method.\n@return array result  The result."),
    m("system.multicall", &["array", "array"], 0, "Process an array of calls, and return an array of\nresults.\n\n@param array calls  An array of call requests\n@return array result  An array of results"),
];

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

/// A spec as the files define it: where it was written does not make it "changed".
fn same_definition(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    a.source = None;
    b.source = None;
    a == b
}

/// Group specs by group name, keeping first-seen order.
fn by_group(specs: &[ServiceSpec]) -> Vec<(String, Vec<ServiceSpec>)> {
    let mut out: Vec<(String, Vec<ServiceSpec>)> = Vec::new();
    for s in specs {
        let g = s.group_name().to_string();
        match out.iter_mut().find(|(n, _)| *n == g) {
            Some((_, v)) => v.push(s.clone()),
            None => out.push((g, vec![s.clone()])),
        }
    }
    out
}

impl Rpc {
    /// `initial`: the programs read at boot and already given to the supervisor.
    pub fn new(
        handle: SupervisorHandle,
        source: RereadSource,
        identifier: &str,
        initial: Vec<ServiceSpec>,
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

    // ---- process lookup and info ----------------------------------------------------

    /// The supervisor's services that came from supervisord files (see [`is_program`]).
    async fn program_infos(&self) -> Vec<ServiceInfo> {
        let mut infos = self.handle.status().await;
        infos.retain(is_program);
        infos
    }

    /// The processes of `name`'s group, or the one process it names.
    async fn resolve(&self, name: &str) -> Result<(String, Option<ServiceInfo>), Fault> {
        let (group, process) = split_namespec(name);
        let infos = self.program_infos().await;
        if !infos.iter().any(|i| i.group == group) {
            return Err(Fault::with(faults::BAD_NAME, name));
        }
        match process {
            None => Ok((group, None)),
            Some(p) => infos
                .into_iter()
                .find(|i| i.group == group && i.name == p)
                .map(|i| (group, Some(i)))
                .ok_or_else(|| Fault::with(faults::BAD_NAME, name)),
        }
    }

    /// Processes of one group (or all) in supervisord's order: the files' group order
    /// (see `conf::read`), then services defined elsewhere by priority.
    async fn members(&self, group: Option<&str>) -> Vec<ServiceInfo> {
        let specs = self.handle.specs().await;
        let order: Vec<String> = {
            let programs = self.programs.lock().await;
            programs.available.iter().map(|s| s.name.clone()).collect()
        };
        let prio = |name: &str| {
            let rank = order.iter().position(|n| n == name).unwrap_or(order.len());
            let p = specs
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.priority)
                .unwrap_or(999);
            (rank, p)
        };
        let mut infos: Vec<ServiceInfo> = self
            .program_infos()
            .await
            .into_iter()
            .filter(|i| group.map_or(true, |g| i.group == g))
            .collect();
        infos.sort_by_key(|i| prio(&i.name));
        infos
    }

    async fn spec_of(&self, name: &str) -> Option<ServiceSpec> {
        self.handle
            .specs()
            .await
            .into_iter()
            .find(|s| s.name == name)
    }

    async fn get_process_info(&self, name: &str) -> RpcResult {
        match self.resolve(name).await? {
            (_, Some(info)) => {
                let spec = self.spec_of(&info.name).await;
                let logs = spec.map(|s| self.log_names(&s)).unwrap_or_default();
                Ok(self.process_info(&info, logs))
            }
            (_, None) => Err(Fault::with(faults::BAD_NAME, name)),
        }
    }

    /// Every call of `supervisorctl status`: the log names are taken under the supervisor's
    /// lock, so no spec is cloned.
    async fn get_all_process_info(&self) -> RpcResult {
        let mut rows = self.handle.status_with(|s| self.log_names(s));
        rows.retain(|(i, _)| is_program(i));
        rows.sort_by(|(a, _), (b, _)| (&a.group, &a.name).cmp(&(&b.group, &b.name)));
        Ok(Value::Array(
            rows.into_iter()
                .map(|(i, logs)| self.process_info(&i, logs))
                .collect(),
        ))
    }

    /// `(stdout_logfile, stderr_logfile)` as supervisord shows them.
    fn log_names(&self, s: &ServiceSpec) -> (String, String) {
        let stderr = if s.redirect_stderr {
            String::new()
        } else {
            self.logfile_name(&s.stderr, Stream::Stderr)
        };
        (self.logfile_name(&s.stdout, Stream::Stdout), stderr)
    }

    fn process_info(&self, info: &ServiceInfo, logs: (String, String)) -> Value {
        let now = now_secs();
        let (stdout, stderr) = logs;
        let spawnerr = spawnerr_of(info);
        let description = describe(info, &spawnerr, now);
        Value::structure([
            ("name", Value::str(&info.name)),
            ("group", Value::str(&info.group)),
            ("start", Value::Int(info.start_time as i64)),
            ("stop", Value::Int(info.stop_time as i64)),
            ("now", Value::Int(now as i64)),
            ("state", Value::Int(info.state.code().into())),
            ("statename", Value::str(info.state.name())),
            ("spawnerr", Value::Str(spawnerr)),
            ("exitstatus", Value::Int(info.exitstatus.into())),
            ("logfile", Value::Str(stdout.clone())),
            ("stdout_logfile", Value::Str(stdout)),
            ("stderr_logfile", Value::Str(stderr)),
            ("pid", Value::Int(info.pid.unwrap_or(0).into())),
            ("description", Value::Str(description)),
        ])
    }

    /// The log file name clients see: the container path of a file, `/dev/fd/1|2` for the
    /// init's own output, empty when discarded.
    fn logfile_name(&self, target: &LogTarget, stream: Stream) -> String {
        match target {
            LogTarget::Log => match stream {
                Stream::Stdout => "/dev/fd/1".into(),
                Stream::Stderr => "/dev/fd/2".into(),
            },
            LogTarget::File { path, .. } => self
                .source
                .root
                .unroot(path)
                .unwrap_or_else(|| path.clone())
                .to_string_lossy()
                .into_owned(),
            LogTarget::Null => String::new(),
        }
    }

    async fn get_all_config_info(&self) -> RpcResult {
        let programs = self.programs.lock().await;
        let mut rows: Vec<Value> = programs
            .available
            .iter()
            .map(|s| self.config_info(s, programs.active.contains_key(s.group_name())))
            .collect();
        rows.sort_by(|a, b| {
            let n = |v: &Value| v.member("name").and_then(Value::as_str).map(str::to_owned);
            n(a).cmp(&n(b))
        });
        Ok(Value::Array(rows))
    }

    fn config_info(&self, s: &ServiceSpec, inuse: bool) -> Value {
        let autorestart = match s.restart {
            RestartPolicy::Always => Value::Bool(true),
            RestartPolicy::Never => Value::Bool(false),
            RestartPolicy::OnFailure => Value::str("unexpected"),
        };
        let uid = s
            .user
            .as_deref()
            .and_then(|u| {
                u.parse::<u32>().ok().or_else(|| {
                    nix::unistd::User::from_name(u)
                        .ok()
                        .flatten()
                        .map(|u| u.uid.as_raw())
                })
            })
            .map(|u| Value::Int(u.into()))
            .unwrap_or_else(|| Value::str("none"));
        let dir = s
            .working_dir
            .as_ref()
            .map(|d| {
                let d = self.source.root.unroot(d).unwrap_or_else(|| d.clone());
                Value::str(d.to_string_lossy())
            })
            .unwrap_or_else(|| Value::str("none"));
        let (out_max, out_bk) = rotation(&s.stdout);
        let (err_max, err_bk) = rotation(&s.stderr);
        let stopsignal = s
            .stop_signal
            .parse::<i64>()
            .ok()
            .or_else(|| {
                format!("SIG{}", s.stop_signal)
                    .parse::<nix::sys::signal::Signal>()
                    .ok()
                    .map(|sig| sig as i64)
            })
            .unwrap_or(15);
        let stderr_name = if s.redirect_stderr {
            "none".to_string()
        } else {
            self.logfile_name(&s.stderr, Stream::Stderr)
        };
        Value::structure([
            ("autostart", Value::Bool(s.autostart)),
            ("autorestart", autorestart),
            ("directory", dir),
            ("uid", uid),
            ("command", Value::Str(s.command.join(" "))),
            (
                "exitcodes",
                Value::Array(
                    s.exit_codes
                        .iter()
                        .map(|c| Value::Int((*c).into()))
                        .collect(),
                ),
            ),
            ("group", Value::str(s.group_name())),
            ("group_prio", Value::Int(s.priority.into())),
            ("inuse", Value::Bool(inuse)),
            ("killasgroup", Value::Bool(s.stop_as_group)),
            ("name", Value::str(&s.name)),
            ("process_prio", Value::Int(s.priority.into())),
            ("redirect_stderr", Value::Bool(s.redirect_stderr)),
            ("startretries", Value::Int(s.startretries.into())),
            ("startsecs", Value::Int(s.startsecs.as_secs() as i64)),
            ("stdout_capture_maxbytes", Value::Int(0)),
            ("stdout_events_enabled", Value::Bool(false)),
            (
                "stdout_logfile",
                Value::Str(self.logfile_name(&s.stdout, Stream::Stdout)),
            ),
            ("stdout_logfile_backups", Value::Int(out_bk)),
            ("stdout_logfile_maxbytes", Value::Int(out_max)),
            ("stdout_syslog", Value::Bool(false)),
            ("stopsignal", Value::Int(stopsignal)),
            ("stopwaitsecs", Value::Int(s.stop_timeout.as_secs() as i64)),
            ("stderr_capture_maxbytes", Value::Int(0)),
            ("stderr_events_enabled", Value::Bool(false)),
            ("stderr_logfile", Value::Str(stderr_name)),
            ("stderr_logfile_backups", Value::Int(err_bk)),
            ("stderr_logfile_maxbytes", Value::Int(err_max)),
            ("stderr_syslog", Value::Bool(false)),
            ("serverurl", Value::str("none")),
        ])
    }

    // ---- start / stop / signal ------------------------------------------------------

    async fn start_process(&self, name: &str, wait: bool) -> RpcResult {
        let info = match self.resolve(name).await? {
            (group, None) => return self.start_group(&group, wait).await,
            (_, Some(info)) => info,
        };
        if let Some(spec) = self.spec_of(&info.name).await {
            check_command(&spec)?;
        }
        if RUNNING_STATES.contains(&info.state) {
            return Err(Fault::with(faults::ALREADY_STARTED, name));
        }
        if info.state == ProcessState::Unknown {
            return Err(Fault::with(
                faults::FAILED,
                format!("{name} is in an unknown process state"),
            ));
        }
        let first_failure = self.first_failed_attempt(&info.name);
        tokio::select! {
            r = self.handle.start(&info.name, wait) => if let Err(e) = r {
                return Err(self.start_fault(e, &info.name, name).await);
            },
            // supervisord answers at the first failed attempt, not after all retries.
            () = first_failure, if wait => return Err(Fault::with(faults::SPAWN_ERROR, name)),
        }
        Ok(Value::Bool(true))
    }

    /// A failed start as supervisord reports it: SPAWN_ERROR whenever the process has a
    /// spawn error (exec failure, or "Exited too quickly"), else ABNORMAL_TERMINATION.
    async fn start_fault(&self, e: SuperviseError, process: &str, name: &str) -> Fault {
        // supervisord sets `spawnerr` for exec failures and for exits before `startsecs`,
        // i.e. whenever a start attempt ends in BACKOFF or FATAL.
        let spawnerr = self
            .handle
            .info(process)
            .await
            .map(|i| matches!(i.state, ProcessState::Backoff | ProcessState::Fatal))
            .unwrap_or(false);
        match e {
            SuperviseError::SpawnError { .. } => Fault::with(faults::SPAWN_ERROR, name),
            SuperviseError::AbnormalTermination(_) | SuperviseError::Failed(_) if spawnerr => {
                Fault::with(faults::SPAWN_ERROR, name)
            }
            SuperviseError::AbnormalTermination(_) | SuperviseError::Failed(_) => {
                Fault::with(faults::ABNORMAL_TERMINATION, name)
            }
            other => fault_of(other, name),
        }
    }

    /// Resolves when `name` backs off after a failed start attempt (a spawn error or an
    /// exit before `startsecs`); never otherwise.
    async fn first_failed_attempt(&self, name: &str) {
        let mut changed = self.handle.subscribe();
        // The caller checked the process is not in BACKOFF before starting it, so any
        // BACKOFF seen from now on is this start failing.
        loop {
            match self.handle.info(name).await {
                Ok(i) if i.state == ProcessState::Backoff => return,
                Ok(_) => {}
                Err(_) => return std::future::pending().await,
            }
            if changed.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    async fn stop_process(&self, name: &str, wait: bool) -> RpcResult {
        let info = match self.resolve(name).await? {
            (group, None) => return self.stop_group(&group, wait).await,
            (_, Some(info)) => info,
        };
        if !RUNNING_STATES.contains(&info.state) {
            return Err(Fault::with(faults::NOT_RUNNING, name));
        }
        self.handle
            .stop(&info.name, wait)
            .await
            .map_err(|e| fault_of(e, name))?;
        Ok(Value::Bool(true))
    }

    async fn signal_process(&self, name: &str, signal: &str) -> RpcResult {
        let info = match self.resolve(name).await? {
            (group, None) => return self.signal_group(&group, signal).await,
            (_, Some(info)) => info,
        };
        let sig =
            values::signal_name(signal).map_err(|_| Fault::with(faults::BAD_SIGNAL, signal))?;
        if !SIGNALLABLE_STATES.contains(&info.state) {
            return Err(Fault::with(faults::NOT_RUNNING, name));
        }
        self.handle
            .signal(&info.name, &sig)
            .await
            .map_err(|e| fault_of(e, name))?;
        Ok(Value::Bool(true))
    }

    async fn start_group(&self, group: &str, wait: bool) -> RpcResult {
        self.group_exists(group).await?;
        self.start_members(Some(group), wait).await
    }

    async fn start_all(&self, wait: bool) -> RpcResult {
        self.start_members(None, wait).await
    }

    /// Start every process of `group` (all processes for `None`) that is not running.
    async fn start_members(&self, group: Option<&str>, wait: bool) -> RpcResult {
        let procs = self.members(group).await;
        Ok(self
            .for_each(
                procs,
                |i| !RUNNING_STATES.contains(&i.state),
                |n| async move { self.start_process(&n, wait).await },
            )
            .await)
    }

    async fn stop_group(&self, group: &str, wait: bool) -> RpcResult {
        self.group_exists(group).await?;
        self.stop_members(Some(group), wait).await
    }

    async fn stop_all(&self, wait: bool) -> RpcResult {
        self.stop_members(None, wait).await
    }

    /// Stop every running process of `group` (all processes for `None`).
    async fn stop_members(&self, group: Option<&str>, wait: bool) -> RpcResult {
        let procs = self.members(group).await;
        Ok(self
            .for_each(
                procs,
                |i| RUNNING_STATES.contains(&i.state),
                |n| async move { self.stop_process(&n, wait).await },
            )
            .await)
    }

    async fn signal_group(&self, group: &str, signal: &str) -> RpcResult {
        self.group_exists(group).await?;
        self.signal_members(Some(group), signal).await
    }

    async fn signal_all(&self, signal: &str) -> RpcResult {
        self.signal_members(None, signal).await
    }

    /// Signal every signallable process of `group` (all processes for `None`).
    async fn signal_members(&self, group: Option<&str>, signal: &str) -> RpcResult {
        let procs = self.members(group).await;
        let signal = signal.to_string();
        Ok(self
            .for_each(
                procs,
                |i| SIGNALLABLE_STATES.contains(&i.state),
                |n| {
                    let signal = signal.clone();
                    async move { self.signal_process(&n, &signal).await }
                },
            )
            .await)
    }

    async fn group_exists(&self, group: &str) -> Result<(), Fault> {
        if self.program_infos().await.iter().any(|i| i.group == group) {
            Ok(())
        } else {
            Err(Fault::with(faults::BAD_NAME, group))
        }
    }

    /// supervisord's `make_allfunc`: run `f` on every process matching `pred` (all at
    /// once, like its deferred callbacks) and report `{name, group, status, description}`
    /// in the order they finish, as supervisord does (supervisorctl prints them so, and its
    /// exit status comes from them).
    async fn for_each<F, Fut>(
        &self,
        procs: Vec<ServiceInfo>,
        pred: impl Fn(&ServiceInfo) -> bool,
        f: F,
    ) -> Value
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = RpcResult>,
    {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let chosen: Vec<ServiceInfo> = procs.into_iter().filter(|i| pred(i)).collect();
        let outcomes: Vec<(usize, RpcResult)> = chosen
            .iter()
            .enumerate()
            .map(|(k, i)| {
                let fut = f(make_namespec(&i.group, &i.name));
                async move { (k, fut.await) }
            })
            .collect::<FuturesUnordered<_>>()
            .collect()
            .await;
        Value::Array(
            outcomes
                .into_iter()
                .map(|(k, r)| {
                    let i = &chosen[k];
                    let (status, description) = match r {
                        Ok(_) => (faults::SUCCESS, "OK".to_string()),
                        Err(f) => (f.code, f.text),
                    };
                    Value::structure([
                        ("name", Value::str(&i.name)),
                        ("group", Value::str(&i.group)),
                        ("status", Value::Int(status.into())),
                        ("description", Value::Str(description)),
                    ])
                })
                .collect(),
        )
    }

    // ---- reread / add / remove ------------------------------------------------------

    async fn reload_config(&self) -> RpcResult {
        let mut programs = self.programs.lock().await;
        let src = &self.source;
        let parsed = conf::read(&src.conf, &src.root, &src.overrides)
            .map_err(|e| Fault::with(faults::CANT_REREAD, e))?;
        for w in &parsed.warnings {
            tracing::warn!("{w}");
        }
        let available = parsed.programs;
        let new_groups = by_group(&available);
        let added: Vec<Value> = new_groups
            .iter()
            .filter(|(g, _)| !programs.active.contains_key(g))
            .map(|(g, _)| Value::str(g))
            .collect();
        let changed: Vec<Value> = new_groups
            .iter()
            .filter(|(g, specs)| {
                programs.active.get(g).is_some_and(|cur| {
                    cur.len() != specs.len()
                        || cur.iter().zip(specs).any(|(a, b)| !same_definition(a, b))
                })
            })
            .map(|(g, _)| Value::str(g))
            .collect();
        let removed: Vec<Value> = programs
            .active
            .keys()
            .filter(|g| !new_groups.iter().any(|(n, _)| n == *g))
            .map(Value::str)
            .collect();
        programs.available = available;
        Ok(Value::Array(vec![Value::Array(vec![
            Value::Array(added),
            Value::Array(changed),
            Value::Array(removed),
        ])]))
    }

    async fn add_group(&self, name: &str) -> RpcResult {
        let mut programs = self.programs.lock().await;
        let specs: Vec<ServiceSpec> = programs
            .available
            .iter()
            .filter(|s| s.group_name() == name)
            .cloned()
            .collect();
        if specs.is_empty() {
            return Err(Fault::with(faults::BAD_NAME, name));
        }
        if programs.active.contains_key(name) {
            return Err(Fault::with(faults::ALREADY_ADDED, name));
        }
        for spec in &specs {
            self.handle
                .add(spec.clone(), Origin::Supervisord)
                .await
                .map_err(|e| match e {
                    SuperviseError::AlreadyStarted(_) | SuperviseError::BadArguments(_) => {
                        Fault::with(faults::ALREADY_ADDED, name)
                    }
                    other => fault_of(other, name),
                })?;
        }
        tracing::info!(group = name, "supervisord: added process group");
        programs.active.insert(name.to_string(), specs);
        Ok(Value::Bool(true))
    }

    async fn remove_group(&self, name: &str) -> RpcResult {
        let mut programs = self.programs.lock().await;
        let Some(specs) = programs.active.get(name).cloned() else {
            return Err(Fault::with(faults::BAD_NAME, name));
        };
        let infos = self.program_infos().await;
        let unstopped = infos
            .iter()
            .any(|i| i.group == name && !STOPPED_STATES.contains(&i.state));
        if unstopped {
            return Err(Fault::with(faults::STILL_RUNNING, name));
        }
        for spec in &specs {
            match self.handle.remove(&spec.name).await {
                Ok(()) | Err(SuperviseError::BadName(_)) => {}
                Err(SuperviseError::AlreadyStarted(_)) => {
                    return Err(Fault::with(faults::STILL_RUNNING, name))
                }
                Err(e) => return Err(fault_of(e, name)),
            }
        }
        tracing::info!(group = name, "supervisord: removed process group");
        programs.active.remove(name);
        Ok(Value::Bool(true))
    }

    // ---- logs -----------------------------------------------------------------------

    /// The retained output of one stream and the total ever written, or `None` when the
    /// stream has no log (supervisord: logfile None).
    async fn captured(&self, name: &str, stream: Stream) -> Result<Option<(Vec<u8>, u64)>, Fault> {
        let info = match self.resolve(name).await? {
            (_, Some(i)) => i,
            (_, None) => return Err(Fault::with(faults::BAD_NAME, name)),
        };
        if let Some(spec) = self.spec_of(&info.name).await {
            let target = match stream {
                Stream::Stdout => &spec.stdout,
                Stream::Stderr if spec.redirect_stderr => return Ok(None),
                Stream::Stderr => &spec.stderr,
            };
            if *target == LogTarget::Null {
                return Ok(None);
            }
        }
        let tail = self
            .handle
            .tail(&info.name, stream, -(CAPTURE_WINDOW as i64), CAPTURE_WINDOW)
            .map_err(|e| fault_of(e, name))?;
        Ok(Some((tail.bytes, tail.end_offset)))
    }

    async fn read_process_log(
        &self,
        name: &str,
        offset: i64,
        length: i64,
        stream: Stream,
    ) -> RpcResult {
        let Some((buf, total)) = self.captured(name, stream).await? else {
            return Err(Fault::with(faults::NO_FILE, "None"));
        };
        read_window(&buf, total, offset, length).map(Value::Str)
    }

    async fn tail_process_log(
        &self,
        name: &str,
        offset: i64,
        length: i64,
        stream: Stream,
    ) -> RpcResult {
        let Some((buf, total)) = self.captured(name, stream).await? else {
            return Ok(Value::Array(vec![
                Value::str(""),
                Value::Int(0),
                Value::Bool(false),
            ]));
        };
        let (data, end, overflow) = tail_window(&buf, total, offset, length);
        Ok(Value::Array(vec![
            Value::Str(data),
            Value::Int(end as i64),
            Value::Bool(overflow),
        ]))
    }

    fn read_main_log(&self, offset: i64, length: i64) -> RpcResult {
        let Some(log) = &self.mainlog else {
            return Err(Fault::with(faults::NO_FILE, "None"));
        };
        let (buf, total) = log.snapshot();
        read_window(&buf, total, offset, length).map(Value::Str)
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

/// supervisord checks the command exists before spawning (`NO_FILE` / `NOT_EXECUTABLE`).
fn check_command(spec: &ServiceSpec) -> Result<(), Fault> {
    use std::os::unix::fs::PermissionsExt;
    if spec.shell {
        return Ok(());
    }
    let Some(program) = spec.command.first() else {
        return Err(Fault::with(faults::NOT_EXECUTABLE, "command is empty"));
    };
    let found: Option<PathBuf> = if program.contains('/') {
        Some(PathBuf::from(program)).filter(|p| p.exists())
    } else {
        let path = spec
            .env
            .get("PATH")
            .cloned()
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_default();
        path.split(':')
            .map(|d| Path::new(d).join(program))
            .find(|p| p.exists())
    };
    let Some(file) = found else {
        return Err(Fault::with(
            faults::NO_FILE,
            format!("can't find command '{program}'"),
        ));
    };
    let meta = std::fs::metadata(&file).map_err(|_| {
        Fault::with(
            faults::NOT_EXECUTABLE,
            format!("command at '{program}' is not executable"),
        )
    })?;
    if meta.is_dir() {
        return Err(Fault::with(
            faults::NOT_EXECUTABLE,
            format!("command at '{}' is a directory", file.display()),
        ));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(Fault::with(
            faults::NOT_EXECUTABLE,
            format!("command at '{}' is not executable", file.display()),
        ));
    }
    Ok(())
}

fn rotation(t: &LogTarget) -> (i64, i64) {
    match t {
        LogTarget::File {
            max_bytes, backups, ..
        } => (*max_bytes as i64, i64::from(*backups)),
        _ => (0, 0),
    }
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

/// supervisord's `spawnerr`: why the last start attempt failed, while that matters.
fn spawnerr_of(info: &ServiceInfo) -> String {
    match info.state {
        ProcessState::Backoff | ProcessState::Fatal => info
            .spawn_error
            .clone()
            .unwrap_or_else(|| info.description.clone()),
        _ => info.spawn_error.clone().unwrap_or_default(),
    }
}

/// supervisord's `description` for a process.
fn describe(info: &ServiceInfo, spawnerr: &str, now: u64) -> String {
    match info.state {
        ProcessState::Running => format!(
            "pid {}, uptime {}",
            info.pid.unwrap_or(0),
            uptime(now.saturating_sub(info.start_time))
        ),
        ProcessState::Fatal | ProcessState::Backoff => {
            if spawnerr.is_empty() {
                format!("unknown error (try \"tail {}\")", info.name)
            } else {
                spawnerr.to_string()
            }
        }
        ProcessState::Stopped | ProcessState::Exited => {
            if info.start_time == 0 {
                "Not started".into()
            } else {
                local_time(info.stop_time)
            }
        }
        _ => String::new(),
    }
}

/// Python's `str(timedelta)`: `H:MM:SS`, `1 day, H:MM:SS`, `2 days, H:MM:SS`.
pub(crate) fn uptime(secs: u64) -> String {
    let (days, rem) = (secs / 86400, secs % 86400);
    let hms = format!("{}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    match days {
        0 => hms,
        1 => format!("1 day, {hms}"),
        d => format!("{d} days, {hms}"),
    }
}

/// `%b %d %I:%M %p` in local time, as supervisord prints stop times.
fn local_time(secs: u64) -> String {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r and strftime write only into the buffers we pass.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return String::new();
        }
        let mut buf = [0u8; 64];
        let n = libc::strftime(
            buf.as_mut_ptr().cast(),
            buf.len(),
            c"%b %d %I:%M %p".as_ptr(),
            &tm,
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// supervisord's `readFile` over a buffer holding the last `buf.len()` of `total` bytes.
pub(crate) fn read_window(
    buf: &[u8],
    total: u64,
    offset: i64,
    length: i64,
) -> Result<String, Fault> {
    let start_of_buf = total as i64 - buf.len() as i64;
    let slice = |from: i64, to: i64| -> String {
        let from = (from.max(start_of_buf) - start_of_buf).clamp(0, buf.len() as i64) as usize;
        let to = (to.max(start_of_buf) - start_of_buf).clamp(0, buf.len() as i64) as usize;
        String::from_utf8_lossy(&buf[from..to.max(from)]).into_owned()
    };
    if offset < 0 {
        if length != 0 {
            return Err(Fault::new(faults::BAD_ARGUMENTS));
        }
        return Ok(slice((total as i64 + offset).max(0), total as i64));
    }
    if length < 0 {
        return Err(Fault::new(faults::BAD_ARGUMENTS));
    }
    if length == 0 {
        return Ok(slice(0, total as i64)); // supervisord reads the whole file here
    }
    Ok(slice(
        offset,
        offset.saturating_add(length).min(total as i64),
    ))
}

/// supervisord's `tailFile`: `(bytes, new offset, overflow)`.
pub(crate) fn tail_window(buf: &[u8], total: u64, offset: i64, length: i64) -> (String, u64, bool) {
    let sz = total as i64;
    let (mut offset, mut length) = (offset, length);
    let mut overflow = false;
    if sz > offset.saturating_add(length) {
        overflow = true;
        offset = sz - 1;
    }
    if offset.saturating_add(length) > sz {
        if offset > sz - 1 {
            length = 0;
        }
        offset = sz - length;
    }
    offset = offset.max(0);
    length = length.max(0);
    let data = if length == 0 {
        String::new()
    } else {
        read_window(buf, total, offset, length).unwrap_or_default()
    };
    (data, total, overflow)
}

#[cfg(test)]
mod tests {
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
