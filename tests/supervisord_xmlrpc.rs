//! Python's `xmlrpc.client` over the unix socket, doing what the Cloudify manager does
//! (`wait-for-starter`, the REST status endpoint) and what careless clients do (wrong
//! names, arities and types); cfy-init's answers must equal a real supervisord's.

#[path = "common/supervisord.rs"]
mod svd;

use svd::{normalise, python, settled, wait_until, CfyInit, RealSupervisord, PY_PROXY};

/// Programs shaped like the Cloudify image: a one-shot starter writing to /dev/fd/1|2.
const PROGRAMS: &str = r#"
[program:cloudify-starter]
command=/bin/sh -c "echo configuring; sleep 1; echo configured"
stdout_logfile=/dev/fd/1
stdout_logfile_maxbytes=0
stderr_logfile=/dev/fd/2
stderr_logfile_maxbytes=0
startsecs=0
autorestart=false

[program:manual]
command=sleep 1000
autostart=false

[program:missing]
command=/nonexistent/bin/thing
autostart=false

[program:quick]
command=/bin/sh -c "exit 3"
autostart=false
startretries=0
"#;

const SERVICE: &str = "[program:cloudify-restservice]\ncommand=/bin/sh -c 'echo serving; exec sleep 1000'\nstartsecs=0\n";

const SCRIPT: &str = r#"
r = {}
# cfy_manager wait-for-starter: poll until the starter has exited.
deadline = time.time() + 30
while proxy.supervisor.getProcessInfo('cloudify-starter')['statename'] != 'EXITED':
    assert time.time() < deadline, 'starter never exited'
    time.sleep(0.1)
r['starter'] = proxy.supervisor.getProcessInfo('cloudify-starter')
# the REST status endpoint: statename of each service.
r['rest'] = proxy.supervisor.getProcessInfo('cloudify-restservice')['statename']
r['api'] = proxy.supervisor.getAPIVersion()
r['state'] = proxy.supervisor.getState()
r['ident'] = proxy.supervisor.getIdentification()
r['faults'] = {
    'bad_name': fault(proxy.supervisor.getProcessInfo, 'nope'),
    'bad_group': fault(proxy.supervisor.startProcessGroup, 'nope'),
    'arity': fault(proxy.supervisor.getProcessInfo),
    'too_many': fault(proxy.supervisor.getPID, 1, 2),
    'unknown': fault(proxy.supervisor.noSuchMethod),
    'private': fault(proxy.supervisor._update, 'x'),
    'deep': fault(getattr(proxy, 'supervisor.options.x')),
    'already': fault(proxy.supervisor.startProcess, 'cloudify-restservice'),
    'not_running': fault(proxy.supervisor.stopProcess, 'manual'),
    'signal_stopped': fault(proxy.supervisor.signalProcess, 'manual', 'HUP'),
    'bad_signal': fault(proxy.supervisor.signalProcess, 'cloudify-restservice', 'BOGUS'),
    'no_file': fault(proxy.supervisor.startProcess, 'missing'),
    'spawn': fault(proxy.supervisor.startProcess, 'quick'),
    'still_running': fault(proxy.supervisor.removeProcessGroup, 'cloudify-restservice'),
    'already_added': fault(proxy.supervisor.addProcessGroup, 'cloudify-restservice'),
    'add_unknown': fault(proxy.supervisor.addProcessGroup, 'nope'),
    'read_bad_args': fault(proxy.supervisor.readProcessStdoutLog, 'cloudify-restservice', -10, 5),
    'help_missing': fault(proxy.system.methodHelp, 'nope'),
    'sig_missing': fault(proxy.system.methodSignature, 'nope'),
}
r['multicall'] = proxy.system.multicall([
    {'methodName': 'supervisor.getAPIVersion', 'params': []},
    {'methodName': 'supervisor.getProcessInfo', 'params': ['nope']},
    {'methodName': 'system.multicall', 'params': [[]]},
    {'params': []},
])
r['signature'] = proxy.system.methodSignature('supervisor.getProcessInfo')
r['start_wait'] = proxy.supervisor.startProcess('manual', True)
r['info_running'] = proxy.supervisor.getProcessInfo('manual')['statename']
r['stop'] = proxy.supervisor.stopProcess('manual')
r['info_stopped'] = proxy.supervisor.getProcessInfo('manual')['statename']
r['group_stop'] = proxy.supervisor.stopProcessGroup('cloudify-restservice')
r['group_start'] = proxy.supervisor.startProcessGroup('cloudify-restservice')
r['tail'] = proxy.supervisor.tailProcessStdoutLog('cloudify-restservice', 0, 3)
r['read'] = proxy.supervisor.readProcessStdoutLog('cloudify-restservice', 0, 5)
r['fatal'] = {k: v for k, v in proxy.supervisor.getProcessInfo('quick').items()
              if k not in ('logfile', 'stdout_logfile', 'stderr_logfile')}
used = ['supervisor.getProcessInfo', 'supervisor.getAllProcessInfo', 'supervisor.startProcess',
        'supervisor.stopProcess', 'supervisor.reloadConfig', 'supervisor.addProcessGroup',
        'supervisor.removeProcessGroup', 'supervisor.readProcessStdoutLog',
        'supervisor.tailProcessStdoutLog', 'supervisor.readLog', 'supervisor.signalProcess',
        'system.multicall', 'system.listMethods']
listed = proxy.system.listMethods()
r['missing_methods'] = [m for m in used if m not in listed]
print(json.dumps(r, sort_keys=True, indent=1))
# A wrong argument type: supervisord crashes on it (HTTP 500); cfy-init answers a fault.
print('WRONG_TYPE', json.dumps(fault(proxy.supervisor.getProcessInfo, 42)))
"#;

#[test]
fn manager_calls_and_faults_match_supervisord() {
    let includes = [("cloudify-restservice.conf", SERVICE)];
    let real = RealSupervisord::start(PROGRAMS, &includes);
    let ours = CfyInit::prepare(PROGRAMS, &includes).start("");
    wait_until("settled", || settled(&ours.sock) && settled(&real.sock));
    let script = format!("{PY_PROXY}\n{SCRIPT}");
    let theirs = python(&script, &real.sock);
    let mine = python(&script, &ours.sock);
    let (theirs, their_wrong_type) = theirs.split_once("WRONG_TYPE").unwrap();
    let (mine, my_wrong_type) = mine.split_once("WRONG_TYPE").unwrap();
    assert_eq!(their_wrong_type.trim(), r#"["http", 500]"#);
    assert_eq!(my_wrong_type.trim(), r#"[2, "INCORRECT_PARAMETERS"]"#);
    assert_eq!(
        normalise(mine),
        normalise(theirs),
        "left: cfy-init, right: supervisord\ncfy-init log:\n{}",
        ours.log()
    );
    // The comparison is only as good as what it covered.
    assert!(mine.contains("\"EXITED\""), "{mine}");
    assert!(mine.contains("\"/dev/fd/1\""), "{mine}");
    assert!(mine.contains("\"missing_methods\": []"), "{mine}");
    assert!(mine.contains("BAD_NAME: nope"), "{mine}");
}

#[test]
fn garbage_requests_get_http_errors_and_the_server_keeps_answering() {
    let ours = CfyInit::prepare(PROGRAMS, &[("cloudify-restservice.conf", SERVICE)]).start("");
    let script = format!(
        "{PY_PROXY}\n{}",
        r#"
out = []
for body in [b'not xml', b'<methodCall><params/></methodCall>', b'<methodCall><methodName>x</methodName><params><param><value><int>zz</int></value></param></params></methodCall>']:
    c = UnixConn(os.environ['SOCK'])
    c.request('POST', '/RPC2', body, {'Content-Type': 'text/xml'})
    out.append(c.getresponse().status)
c = UnixConn(os.environ['SOCK'])
c.request('GET', '/nowhere')
out.append(c.getresponse().status)
c = UnixConn(os.environ['SOCK'])
c.request('GET', '/RPC2')
out.append(c.getresponse().status)
out.append(proxy.supervisor.getProcessInfo('cloudify-restservice')['statename'])
print(json.dumps(out))
"#
    );
    let out = python(&script, &ours.sock);
    assert_eq!(out.trim(), r#"[400, 400, 400, 404, 400, "RUNNING"]"#);
}

/// Issue 14: a ~860 KB call nesting 20 000 arrays overflowed PID 1's stack. It is answered
/// with a fault now, a body past the size limit with 413, too many parameters with a fault,
/// and the init (and its services) live on.
#[test]
fn hostile_requests_are_refused_and_the_init_lives() {
    let ours = CfyInit::prepare(PROGRAMS, &[("cloudify-restservice.conf", SERVICE)]).start("");
    wait_until("settled", || settled(&ours.sock));
    let script = format!(
        "{PY_PROXY}\n{}",
        r#"
out = {}
def post(body):
    c = UnixConn(os.environ['SOCK'])
    c.request('POST', '/RPC2', body, {'Content-Type': 'text/xml'})
    r = c.getresponse()
    return r.status, r.read().decode()
n = 20000
deep = ("<?xml version='1.0'?><methodCall><methodName>supervisor.getState</methodName><params><param>"
        + "<value><array><data>" * n + "</data></array></value>" * n
        + "</param></params></methodCall>").encode()
out['deep_len'] = len(deep) > 850000
status, text = post(deep)
out['deep'] = [status, text.count('<fault>'), 'INCORRECT_PARAMETERS' in text, '64 deep' in text]
open_only = ("<methodCall><methodName>x</methodName><params><param>" + "<value><struct><member><name>a</name>" * 40000).encode()
status, text = post(open_only)
out['unclosed'] = [status, text.count('<fault>')]
many = ("<methodCall><methodName>supervisor.getState</methodName><params>"
        + "<param><value><int>1</int></value></param>" * 1000 + "</params></methodCall>").encode()
status, text = post(many)
out['many_params'] = [status, 'more than 32 parameters' in text]
# Announced past the limit: answered before any of the body is sent.
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(os.environ['SOCK'])
s.sendall(b'POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n' % (3 << 20))
out['huge'] = int(s.recv(4096).split()[1])
s.close()
out['alive'] = proxy.supervisor.getProcessInfo('cloudify-restservice')['statename']
print(json.dumps(out, sort_keys=True))
"#
    );
    let out = python(&script, &ours.sock);
    assert_eq!(
        out.trim(),
        r#"{"alive": "RUNNING", "deep": [200, 1, true, true], "deep_len": true, "huge": 413, "many_params": [200, true], "unclosed": [200, 1]}"#,
        "cfy-init log:\n{}",
        ours.log()
    );
}
