#!/usr/bin/env bash
# cfy-init's supervisord interface vs a real supervisord (Debian's 4.2.x) on the same
# program sets, at three sizes to show how cost grows: the 19 programs of Cloudify 7.0
# (its program names and options, `sleep` as every command since the manager's binaries
# are not here), 200 programs and 2 000 programs. For each size: RSS of the daemon itself
# once everything runs, and the round trip of one XML-RPC getAllProcessInfo from a warm
# Python client, the two servers interleaved round by round, medians; and the same exchange
# with the response read but not parsed (the server's share).
# Goal at every size: RSS <= 0.15x and round trip <= 0.5x. Run under the build lock.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ -x "$CFY_INIT" ]] || build_release

work=$(mktemp -d /tmp/bench-svd.XXXXXX)
ours_pid=""; real_pid=""
stop_both() {
  # unshare does not pass SIGTERM on: stop the namespace's PID 1 (cfy-init) itself.
  if [[ -n "$ours_pid" ]]; then
    local pid1
    pid1=$(cut -d' ' -f1 <"/proc/$ours_pid/task/$ours_pid/children" 2>/dev/null || true)
    [[ -n "$pid1" ]] && kill "$pid1" 2>/dev/null || true
  fi
  [[ -n "$real_pid" ]] && kill "$real_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  ours_pid=""; real_pid=""
}
trap 'stop_both; rm -rf "$work"' EXIT

# Cloudify 7.0's supervisord programs (cfy_manager/components/*/config/supervisord/*.conf
# at tag 7.0.0) plus the image's cloudify-starter.
CFY7=(cloudify-amqp-postgres cloudify-composer cloudify-execution-scheduler haveged
  cloudify-mgmtworker nginx wait_on_restart etcd patroni postgresql-14 blackbox_exporter
  node_exporter postgres_exporter prometheus cloudify-rabbitmq cloudify-api
  cloudify-restservice rsyslog)

programs() { # size
  if [[ $1 == cloudify7 ]]; then
    printf '[program:cloudify-starter]\ncommand=/bin/sh -c "echo configured; exec sleep 100000"\nstartsecs=0\nautorestart=false\n'
    printf 'stdout_logfile=/dev/fd/1\nstdout_logfile_maxbytes=0\nstderr_logfile=/dev/fd/2\nstderr_logfile_maxbytes=0\n\n'
    local i=0
    for p in "${CFY7[@]}"; do
      i=$((i + 1))
      printf '[program:%s]\ncommand=sleep %d\nuser=root\nautostart=true\nautorestart=true\nstartsecs=0\n' "$p" $((100000 + i))
      printf 'environment=HOME="/root",MANAGER_NAME="%s"\nredirect_stderr=true\nstdout_logfile_maxbytes=5MB\nstdout_logfile_backups=1\n\n' "$p"
    done
  else
    for i in $(seq 1 "$1"); do
      printf '[program:svc%s]\ncommand=sleep %d\nstartsecs=0\n\n' "$i" $((100000 + i))
    done
  fi
}

main_conf() { # socket dir size
  printf '[supervisord]\nlogfile=%s/supervisord.log\npidfile=%s/supervisord.pid\nchildlogdir=%s\nminfds=1024\n\n' "$2" "$2" "$2"
  printf '[unix_http_server]\nfile=%s\nchmod=0770\n\n' "$1"
  printf '[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n'
  programs "$3"
}

running() { # socket count: all `count` programs RUNNING
  python3 - "$1" "$2" <<'PY' 2>/dev/null
import http.client, socket, sys, xmlrpc.client
class C(http.client.HTTPConnection):
    def __init__(self, p): super().__init__('localhost'); self.p = p
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(self.p)
class T(xmlrpc.client.Transport):
    def __init__(self, p): super().__init__(); self.p = p
    def make_connection(self, host): return C(self.p)
infos = xmlrpc.client.ServerProxy('http://x/RPC2', transport=T(sys.argv[1])).supervisor.getAllProcessInfo()
sys.exit(0 if sum(i['statename'] == 'RUNNING' for i in infos) >= int(sys.argv[2]) else 1)
PY
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

bench_size() { # size label count calls-per-round
  local size=$1 label=$2 count=$3 calls=$4 d=$work/$1
  mkdir -p "$d/real" "$d/root/etc" "$d/root/tmp" "$d/root/var"
  main_conf "$d/real/s.sock" "$d/real" "$size" >"$d/real/supervisord.conf"
  supervisord -n -c "$d/real/supervisord.conf" >/dev/null 2>&1 &
  real_pid=$!
  main_conf /tmp/supervisor.sock /var "$size" >"$d/root/etc/supervisord.conf"
  printf 'supervisord:\n  enabled: true\nlog:\n  level: warn\n' >"$d/cfy-init.yaml"
  unshare --pid --fork --mount-proc --kill-child "$CFY_INIT" --root "$d/root" \
    --config "$d/cfy-init.yaml" run >"$d/cfy-init.log" 2>&1 &
  ours_pid=$!
  local ok=""
  for _ in $(seq 1 1200); do
    if running "$d/real/s.sock" "$count" && running "$d/root/tmp/supervisor.sock" "$count"; then
      ok=1; break
    fi
    sleep 0.25
  done
  [[ -n $ok ]] || { echo "not all $count programs RUNNING"; tail -20 "$d/cfy-init.log"; exit 1; }
  sleep 2 # let both reach their steady state (start-up allocations returned)
  local init_pid
  init_pid=$(cut -d' ' -f1 <"/proc/$ours_pid/task/$ours_pid/children")
  ratio "supervisord RSS ($label)" "$(echo "$(rss_kib "$init_pid") / 1024" | bc -l)" supervisord \
    "$(echo "$(rss_kib "$real_pid") / 1024" | bc -l)" " MiB" "<= 0.15"
  # Mean ms per getAllProcessInfo from one warm client per server (`calls` a round on one
  # connection each), median over 7 rounds alternating which server goes first.
  read -r ours theirs < <(python3 - "$d/root/tmp/supervisor.sock" "$d/real/s.sock" "$calls" <<'PY'
import http.client, socket, statistics, sys, time, xmlrpc.client
class C(http.client.HTTPConnection):
    def __init__(self, p): super().__init__('localhost'); self.p = p
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(self.p)
class T(xmlrpc.client.Transport):
    def __init__(self, p): super().__init__(); self.p = p
    def make_connection(self, host):
        if self._connection[1] is None: self._connection = (host, C(self.p))
        return self._connection[1]
calls = int(sys.argv[3])
proxies = [xmlrpc.client.ServerProxy('http://localhost/RPC2', transport=T(p)) for p in sys.argv[1:3]]
for s in proxies:
    for _ in range(max(2, calls // 10)): s.supervisor.getAllProcessInfo()
rounds = [[], []]
for r in range(7):
    for k in ((0, 1) if r % 2 == 0 else (1, 0)):
        t = time.perf_counter()
        for _ in range(calls): proxies[k].supervisor.getAllProcessInfo()
        rounds[k].append((time.perf_counter() - t) / calls * 1000)
print(statistics.median(rounds[0]), statistics.median(rounds[1]))
PY
  )
  ratio "XML-RPC getAllProcessInfo round trip ($label)" "$ours" supervisord "$theirs" " ms" "<= 0.5"
  # The same exchange without the client's XML parsing: the server's own share of the
  # round trip (what the client spends parsing depends on the payload, alike for both).
  read -r ours theirs < <(python3 - "$d/root/tmp/supervisor.sock" "$d/real/s.sock" "$calls" <<'PY'
import http.client, socket, statistics, sys, time, xmlrpc.client
class C(http.client.HTTPConnection):
    def __init__(self, p): super().__init__('localhost'); self.p = p
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(self.p)
calls = int(sys.argv[3])
req = xmlrpc.client.dumps((), 'supervisor.getAllProcessInfo').encode()
conns = [C(p) for p in sys.argv[1:3]]
def call(c):
    c.request('POST', '/RPC2', req, {'Content-Type': 'text/xml'})
    c.getresponse().read()
for c in conns:
    for _ in range(max(2, calls // 10)): call(c)
rounds = [[], []]
for r in range(7):
    for k in ((0, 1) if r % 2 == 0 else (1, 0)):
        t = time.perf_counter()
        for _ in range(calls): call(conns[k])
        rounds[k].append((time.perf_counter() - t) / calls * 1000)
print(statistics.median(rounds[0]), statistics.median(rounds[1]))
PY
  )
  ratio "getAllProcessInfo server share, no client parsing ($label)" "$ours" supervisord "$theirs" " ms" "(shows the part the server controls)"
  stop_both
}

echo "LOAD before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
bench_size cloudify7 "Cloudify 7.0, 19 programs" 19 200
bench_size 200 "200 programs" 200 50
bench_size 2000 "2000 programs" 2000 5
echo "LOAD after: $(cut -d' ' -f1-3 /proc/loadavg)"
