//! The method table: names, signatures and help texts as supervisord 4.2 gives them
//! (`system.listMethods`, `methodSignature`, `methodHelp`, and the arity checks).

/// One row of the method table: name, `[return, params...]` types, optional trailing
/// params, help text.
pub(super) struct MethodDoc {
    pub(super) name: &'static str,
    pub(super) sig: &'static [&'static str],
    pub(super) optional: usize,
    pub(super) help: &'static str,
}

pub(super) const fn m(
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

pub(super) const METHODS: &[MethodDoc] = &[
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
