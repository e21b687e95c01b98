#!/usr/bin/env bash
# Supervision benchmarks, cfy-init against supervisord running the same real services
# (PostgreSQL 15 as postgres, nginx as www-data), side by side:
#   - boot to all ready: cfy-init's readiness (probes passed) vs supervisord's all RUNNING
#     (startsecs 1, as Cloudify's programs); also the service-level view (PostgreSQL
#     answers pg_isready and nginx serves HTTP 200), the same probe for both
#   - crash → restarted: kill -9 PostgreSQL's postmaster, time until a new postmaster runs
#     (supervision overhead) and until it accepts connections again; p50 of 7
source "$(dirname "$0")/lib.sh"
[ -x "$CFY_INIT" ] || build_release
WORK=$(mktemp -d /tmp/cfy-bench-sup.XXXXXX)
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT
export CFY_INIT_LOG=info

# Debian's python3 has the supervisor package (for its XML-RPC transport).
/usr/bin/python3 - "$WORK" "$CFY_INIT" <<'PY' > "$WORK/results"
import json, os, pwd, socket, statistics, subprocess, sys, time
work, cfy = sys.argv[1:]
PG = "/usr/lib/postgresql/15/bin"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def chown(path, user):
    u = pwd.getpwnam(user)
    subprocess.run(["chown", "-R", f"{u.pw_uid}:{u.pw_gid}", path], check=True)

# PostgreSQL cluster and nginx site shared by both supervisors (run one at a time).
pgdir = os.path.join(work, "pg"); data = os.path.join(pgdir, "data"); sock = os.path.join(pgdir, "sock")
os.makedirs(data); os.makedirs(sock); os.chmod(data, 0o700); chown(pgdir, "postgres")
pgu = pwd.getpwnam("postgres")
subprocess.run([f"{PG}/initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-D", data],
               check=True, stdout=subprocess.DEVNULL, cwd=pgdir,
               preexec_fn=lambda: (os.setgid(pgu.pw_gid), os.setuid(pgu.pw_uid)))
pg_port, web_port = free_port(), free_port()
ng = os.path.join(work, "nginx"); os.makedirs(os.path.join(ng, "html"))
open(os.path.join(ng, "html/index.html"), "w").write("ok\n")
open(os.path.join(ng, "nginx.conf"), "w").write(f"""daemon off; worker_processes 1; pid {ng}/nginx.pid; error_log stderr;
events {{ worker_connections 64; }}
http {{ access_log off; client_body_temp_path {ng}/b; proxy_temp_path {ng}/p; fastcgi_temp_path {ng}/f;
uwsgi_temp_path {ng}/u; scgi_temp_path {ng}/s; server {{ listen 127.0.0.1:{web_port}; root {ng}/html; }} }}
""")
chown(ng, "www-data")
pg_cmd = [f"{PG}/postgres", "-D", data, "-p", str(pg_port), "-k", sock, "-c", "listen_addresses=127.0.0.1"]
ng_cmd = ["/usr/sbin/nginx", "-e", "stderr", "-c", f"{ng}/nginx.conf"]

def pg_ready():
    return subprocess.run(["pg_isready", "-q", "-U", "postgres", "-h", "127.0.0.1", "-p", str(pg_port)]).returncode == 0
def web_ready():
    try:
        with socket.create_connection(("127.0.0.1", web_port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
def wait(cond, limit=60, what=""):
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > limit:
            raise SystemExit(f"timed out waiting for {what or cond}")
        time.sleep(0.002)

# --- cfy-init
cfg = os.path.join(work, "cfy.yaml")
def flow(argv): return "[" + ", ".join(json.dumps(a) for a in argv) + "]"
open(cfg, "w").write(f"""supervise:
  shutdown_deadline: 20s
  services:
    - name: postgres
      command: {flow(pg_cmd)}
      user: postgres
      stop_signal: INT
      crash_loop: {{max_restarts: 100, window: 1m}}  # the benchmark crashes it on purpose
      readiness: {{check: {{type: exec, command: [pg_isready, -q, -U, postgres, -h, 127.0.0.1, -p, "{pg_port}"]}}, interval: 20ms}}
    - name: nginx
      command: {flow(ng_cmd)}
      user: www-data
      stop_signal: QUIT
      readiness: {{check: {{type: http, url: "http://127.0.0.1:{web_port}/"}}, interval: 20ms}}
""")
log = os.path.join(work, "cfy.log")

def cfy_all_ready():
    try:
        ev = [json.loads(l) for l in open(log) if l.startswith("{")]
    except (OSError, ValueError):
        return False
    ready = {e.get("service") for e in ev if e.get("message") in ("ready", "running and ready")}
    return {"postgres", "nginx"} <= ready

# --- supervisord
sdir = os.path.join(work, "sd"); os.makedirs(sdir)
sockf = os.path.join(sdir, "s.sock")
open(os.path.join(sdir, "supervisord.conf"), "w").write(f"""[unix_http_server]
file={sockf}
[supervisord]
nodaemon=true
logfile={sdir}/supervisord.log
pidfile={sdir}/supervisord.pid
childlogdir={sdir}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{sockf}
[program:postgres]
command={" ".join(pg_cmd)}
user=postgres
stopsignal=INT
autorestart=true
[program:nginx]
command={" ".join(ng_cmd)}
user=www-data
stopsignal=QUIT
autorestart=true
""")
def sd_all_running():
    from supervisor.xmlrpc import SupervisorTransport
    import xmlrpc.client
    try:
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{sockf}"))
        infos = proxy.supervisor.getAllProcessInfo()
        return len(infos) == 2 and all(i["statename"] == "RUNNING" for i in infos)
    except Exception:
        return False

def start(tool):
    if tool == "cfy-init":
        return subprocess.Popen([cfy, "--root", work, "--config", cfg, "--log-format", "json", "run"],
                                stderr=open(log, "w"))
    return subprocess.Popen(["supervisord", "-c", os.path.join(sdir, "supervisord.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def children(pid):
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []
def postmaster(sup):
    for c in children(sup):
        try:
            if f"{PG}/postgres" in open(f"/proc/{c}/cmdline").read():
                return c
        except OSError:
            pass
    return None

for tool in ["cfy-init", "supervisord"]:
    own, external = [], []
    for _ in range(5):
        t0 = time.monotonic()
        p = start(tool)
        wait(lambda: pg_ready() and web_ready(), what=f"{tool}: services answering")
        external.append(time.monotonic() - t0)
        wait(cfy_all_ready if tool == "cfy-init" else sd_all_running, what=f"{tool}: all ready")
        own.append(time.monotonic() - t0)
        crash_spawn, crash_ready = [], []
        if len(own) == 5:
            for _ in range(7):
                old = postmaster(p.pid)
                t1 = time.monotonic()
                os.kill(old, 9)
                wait(lambda: (postmaster(p.pid) or old) != old, what=f"{tool}: new postmaster")
                crash_spawn.append(time.monotonic() - t1)
                wait(pg_ready, what=f"{tool}: postgres back")
                crash_ready.append(time.monotonic() - t1)
                time.sleep(1.2)  # past startsecs, so the next crash is a crash, not a failed start
            print(f"crash_spawn {tool} {statistics.median(crash_spawn) * 1000:.3f}")
            print(f"crash_ready {tool} {statistics.median(crash_ready) * 1000:.3f}")
        p.terminate(); p.wait()
        wait(lambda: not pg_ready() and not web_ready(), what=f"{tool}: services gone")
    print(f"boot_own {tool} {statistics.median(own) * 1000:.3f}")
    print(f"boot_ext {tool} {statistics.median(external) * 1000:.3f}")
PY

val() { awk -v k="$1" -v n="$2" '$1 == k && $2 == n { print $3 }' "$WORK/results"; }
ratio "boot to all ready (own status: ready vs all RUNNING)" "$(val boot_own cfy-init)" supervisord "$(val boot_own supervisord)" ms "<= 0.8"
ratio "boot to services answering (pg_isready + HTTP 200)" "$(val boot_ext cfy-init)" supervisord "$(val boot_ext supervisord)" ms "<= 1"
ratio "crash -> new postmaster running (p50)" "$(val crash_spawn cfy-init)" supervisord "$(val crash_spawn supervisord)" ms "overhead <= 100 ms"
ratio "crash -> PostgreSQL accepting again (p50)" "$(val crash_ready cfy-init)" supervisord "$(val crash_ready supervisord)" ms "<= 1"
