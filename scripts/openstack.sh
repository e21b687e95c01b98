#!/usr/bin/env bash
# A real OpenStack control plane (Debian 12's own Zed packages) on loopback, for cfy-recover's
# end-to-end tests and demos. No VM runs: Nova uses its fake virt driver, Cinder its fake volume
# driver, Neutron ML2 linuxbridge with its agent on the fake compute host.
#
#   scripts/openstack.sh up keystone   MariaDB, memcached, Keystone (127.0.0.1:5000), projects
#                                      `service` and `demo`, users `demo-member`, `demo-admin`
#   scripts/openstack.sh up compute    + RabbitMQ, Glance, Placement, Nova (two fake compute hosts,
#                                      fakehost1 and fakehost2), Neutron, Cinder and the
#                                      demo resources (flavor, image, networks, router)
#   scripts/openstack.sh up all        keystone + compute + `scripts/openstack/swift.sh up` (if present)
#   scripts/openstack.sh install       only the packages (~1.2 GB) and the `openstack` CLI venv
#   scripts/openstack.sh down          stops every process this script started (by session id)
#   scripts/openstack.sh env           prints a clouds.yaml: clouds `cfy-admin` and `cfy-member`
#   scripts/openstack.sh status        which services run; `logs` prints the log directory
#
# Idempotent: installed packages, databases, keys and catalog entries are kept; running services
# are left alone. Everything binds 127.0.0.1 only. State, configs and logs live in
# $CFY_OS_DIR (default /var/lib/cfy-openstack); logs in $CFY_OS_DIR/logs are kept until the next
# `down --purge`. Passwords are generated once into $CFY_OS_DIR/passwords (mode 0600).
#
# For plug-ins (scripts/openstack/*.sh), `source scripts/openstack.sh lib` gives: os_dir, pw NAME,
# start NAME CMD..., running NAME, waitport PORT, admin_token, ks_user NAME PASSWORD,
# ks_grant PROJECT USER ROLE, ks_endpoint NAME TYPE URL, os_install PACKAGES...
# Recipe, costs and traps: docs of the project's OpenStack trial (openstack-zed.md).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${CFY_OS_DIR:-/var/lib/cfy-openstack}"
TEMPLATES="$HERE/openstack/etc"
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
PY=/usr/bin/python3
KS=http://127.0.0.1:5000/v3
T0=$(date +%s)

log() { echo "[openstack $(($(date +%s) - T0))s] $*" >&2; }
die() {
  log "FAILED: $*; logs in $DIR/logs"
  exit 1
}
os_dir() { echo "$DIR"; }

# ---- packages --------------------------------------------------------------------------------
KEYSTONE_PKGS=(mariadb-server python3-pymysql memcached keystone uwsgi-core uwsgi-plugin-python3 curl jq)
COMPUTE_PKGS=(rabbitmq-server glance-api placement-api nova-api nova-conductor nova-scheduler
  python3-nova neutron-server cinder-api cinder-scheduler cinder-volume tgt qemu-utils)

os_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  (
    flock 9
    export DEBIAN_FRONTEND=noninteractive
    echo "dbconfig-common dbconfig-common/dbconfig-install boolean false" | debconf-set-selections
    # Services must not start by themselves; another installer's policy file is left in place.
    local own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      own_policy=1
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$DIR/logs/apt.log" 2>&1 ||
      { apt-get update -qq >>"$DIR/logs/apt.log" 2>&1 &&
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$DIR/logs/apt.log" 2>&1; } ||
      { ((own_policy)) && rm -f /usr/sbin/policy-rc.d; exit 1; }
    ((own_policy)) && rm -f /usr/sbin/policy-rc.d
    exit 0
  ) 9>/tmp/cfy-apt.lock || die "apt-get install (see $DIR/logs/apt.log)"
}

# The real `openstack` CLI (python-openstackclient from PyPI) in its own venv, for the tests.
OSC_VENV="${CFY_OSC_VENV:-/opt/cfy-osc}"
osc_install() {
  [ -x "$OSC_VENV/bin/openstack" ] && return 0
  log "installing python-openstackclient into $OSC_VENV"
  $PY -m venv "$OSC_VENV" 2>/dev/null || { os_install python3-venv && $PY -m venv "$OSC_VENV"; }
  "$OSC_VENV/bin/pip" install -q python-openstackclient >"$DIR/logs/pip.log" 2>&1 ||
    die "pip install python-openstackclient"
}

# ---- processes -------------------------------------------------------------------------------
# Each service runs in its own session; its pid (= session id) is in run/NAME.pid.
running() { [ -f "$DIR/run/$1.pid" ] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }
start() {
  local name=$1
  shift
  running "$name" && return 0
  log "starting $name"
  STARTED=$((STARTED + 1))
  setsid "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/run/$name.pid"
}
waitport() {
  local i
  for i in $(seq 1 240); do
    ss -Hltn "sport = :$1" | grep -q "127.0.0.1:$1" && return 0
    sleep 0.5
  done
  die "nothing listens on 127.0.0.1:$1 after 120 s"
}
stop_all() {
  local f sid pids i
  for f in "$DIR"/run/*.pid; do
    [ -e "$f" ] || continue
    sid=$(cat "$f")
    pids=$(ps -eo pid=,sid= | awk -v s="$sid" '$2==s{print $1}')
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
  done
  for i in $(seq 1 40); do
    local left=0
    for f in "$DIR"/run/*.pid; do
      [ -e "$f" ] || continue
      sid=$(cat "$f")
      [ -n "$(ps -eo sid= | awk -v s="$sid" '$1==s')" ] && left=1
    done
    ((left)) || break
    sleep 0.25
  done
  for f in "$DIR"/run/*.pid; do
    [ -e "$f" ] || continue
    sid=$(cat "$f")
    pids=$(ps -eo pid=,sid= | awk -v s="$sid" '$2==s{print $1}')
    [ -n "$pids" ] && { log "kill -9 $(basename "$f" .pid)"; kill -9 $pids 2>/dev/null || true; }
    rm -f "$f"
  done
}

# ---- secrets and configs ---------------------------------------------------------------------
pw() {
  local f="$DIR/passwords"
  touch "$f" && chmod 600 "$f"
  local v
  v=$(awk -v k="$1" '$1==k{print $2}' "$f")
  if [ -z "$v" ]; then
    v=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    echo "$1 $v" >>"$f"
  fi
  echo "$v"
}
render() { # render TEMPLATE -> $DIR/etc/TEMPLATE, root-only (it holds passwords)
  local out="$DIR/etc/$1"
  sed -e "s|@DIR@|$DIR|g" -e "s|@PW_DB@|$(pw db)|g" -e "s|@PW_SVC@|$(pw service)|g" \
    -e "s|@TOKEN_EXPIRATION@|${CFY_OS_TOKEN_EXPIRATION:-3600}|g" \
    -e "s|@RABBIT_PORT@|$RABBIT_PORT|g" "$TEMPLATES/$1" >"$out.tmp"
  chmod 640 "$out.tmp"
  mv "$out.tmp" "$out"
}
RABBIT_PORT=5672
STARTED=0 # services started by this run (0: everything was up already)

# ---- Keystone REST (curl + jq: one call each, no CLI start-up) --------------------------------
admin_token() {
  curl -sf -D - -o /dev/null -H 'Content-Type: application/json' "$KS/auth/tokens" -d @- <<EOF |
{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin",
 "domain":{"id":"default"},"password":"$(pw admin)"}}},
 "scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}
EOF
    awk 'tolower($1)=="x-subject-token:"{print $2}' | tr -d '\r'
}
TOKEN=
ks() { # ks METHOD PATH [JSON]
  [ -n "$TOKEN" ] || TOKEN=$(admin_token)
  [ -n "$TOKEN" ] || die "no admin token from Keystone"
  curl -sf -X "$1" -H "X-Auth-Token: $TOKEN" -H 'Content-Type: application/json' \
    "$KS$2" ${3:+-d "$3"}
}
ks_id() { # ks_id COLLECTION NAME [JSON-TO-CREATE]: the id of the named entity, created when absent
  local id
  id=$(ks GET "/$1?name=$2" | jq -r ".$1[0].id // empty")
  if [ -z "$id" ] && [ -n "${3:-}" ]; then
    id=$(ks POST "/$1" "$3" | jq -r '.[keys[0]].id')
  fi
  echo "$id"
}
ks_project() { ks_id projects "$1" "{\"project\":{\"name\":\"$1\",\"domain_id\":\"default\"}}"; }
ks_role() { ks_id roles "$1" "{\"role\":{\"name\":\"$1\"}}"; }
ks_user() { # ks_user NAME PASSWORD: created, or its password reset to PASSWORD
  local id
  id=$(ks_id users "$1" "{\"user\":{\"name\":\"$1\",\"domain_id\":\"default\",\"password\":\"$2\"}}")
  ks PATCH "/users/$id" "{\"user\":{\"password\":\"$2\"}}" >/dev/null
  echo "$id"
}
ks_grant() { # ks_grant PROJECT USER ROLE
  ks PUT "/projects/$(ks_project "$1")/users/$(ks_id users "$2")/roles/$(ks_role "$3")" >/dev/null
}
ks_endpoint() { # ks_endpoint NAME TYPE URL: the service and its public/internal/admin endpoints
  local sid i
  sid=$(ks GET "/services?type=$2" | jq -r --arg n "$1" '.services[] | select(.name==$n) | .id' | head -1)
  [ -n "$sid" ] || sid=$(ks POST /services "{\"service\":{\"name\":\"$1\",\"type\":\"$2\"}}" | jq -r .service.id)
  for i in public internal admin; do
    [ -n "$(ks GET "/endpoints?service_id=$sid&interface=$i" | jq -r '.endpoints[0].id // empty')" ] ||
      ks POST /endpoints "{\"endpoint\":{\"service_id\":\"$sid\",\"interface\":\"$i\",\"region_id\":\"RegionOne\",\"url\":\"$3\"}}" >/dev/null
  done
}

# ---- keystone --------------------------------------------------------------------------------
up_mariadb() {
  install -d -o mysql -g mysql "$DIR/mysql" "$DIR/run/mysqld"
  if [ ! -d "$DIR/mysql/mysql" ]; then
    log "initialising MariaDB in $DIR/mysql"
    mariadb-install-db --user=mysql --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
      >>"$DIR/logs/mariadb.log" 2>&1 || die "mariadb-install-db"
  fi
  start mariadb /usr/sbin/mariadbd --user=mysql --datadir="$DIR/mysql" --bind-address=127.0.0.1 \
    --port=3306 --socket="$DIR/run/mysqld/mysqld.sock" --pid-file="$DIR/run/mysqld/mysqld.pid" \
    --max-connections=1000 --skip-log-bin
  waitport 3306
  local i
  for i in $(seq 1 60); do sql -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.5; done
  local d
  for d in keystone glance placement nova_api nova nova_cell0 neutron cinder; do
    sql -e "CREATE DATABASE IF NOT EXISTS $d"
  done
  sql -e "CREATE USER IF NOT EXISTS 'os'@'127.0.0.1' IDENTIFIED BY '$(pw db)';
    ALTER USER 'os'@'127.0.0.1' IDENTIFIED BY '$(pw db)';
    GRANT ALL PRIVILEGES ON *.* TO 'os'@'127.0.0.1'; FLUSH PRIVILEGES;"
}
sql() { mariadb --socket="$DIR/run/mysqld/mysqld.sock" -uroot "$@"; }

up_keystone() {
  mkdir -p "$DIR"/{etc,logs,run,keystone}
  os_install "${KEYSTONE_PKGS[@]}"
  up_mariadb
  start memcached /usr/bin/memcached -u memcache -l 127.0.0.1 -p 11211 -m 64
  render keystone.conf
  local K=(keystone-manage --config-file "$DIR/etc/keystone.conf")
  if ! running keystone; then
    "${K[@]}" db_sync >>"$DIR/logs/keystone-manage.log" 2>&1 || die "keystone-manage db_sync"
    [ -e "$DIR/keystone/fernet-keys/0" ] ||
      "${K[@]}" fernet_setup --keystone-user root --keystone-group root >>"$DIR/logs/keystone-manage.log" 2>&1
    [ -e "$DIR/keystone/credential-keys/0" ] ||
      "${K[@]}" credential_setup --keystone-user root --keystone-group root >>"$DIR/logs/keystone-manage.log" 2>&1
    "${K[@]}" bootstrap --bootstrap-password "$(pw admin)" --bootstrap-region-id RegionOne \
      --bootstrap-admin-url "$KS/" --bootstrap-internal-url "$KS/" --bootstrap-public-url "$KS/" \
      >>"$DIR/logs/keystone-manage.log" 2>&1 || die "keystone-manage bootstrap"
    # Without `Connection: close` uwsgi resets reused connections (the clients see resets).
    start keystone env OS_KEYSTONE_CONFIG_FILES="$DIR/etc/keystone.conf" uwsgi --plugin python3 \
      --http-socket 127.0.0.1:5000 --wsgi-file /usr/bin/keystone-wsgi-public --master \
      --processes 2 --threads 4 --lazy-apps --die-on-term --add-header 'Connection: close'
  fi
  waitport 5000
  local i
  for i in $(seq 1 120); do curl -sf "$KS" >/dev/null && break; sleep 0.5; done
  curl -sf "$KS" >/dev/null || die "Keystone does not answer on $KS"
  for i in $(seq 1 20); do TOKEN=$(admin_token) && [ -n "$TOKEN" ] && break; sleep 0.5; done
  [ -n "$TOKEN" ] || die "no admin token from Keystone"
  if [ -e "$DIR/keystone.done" ]; then
    log "keystone up on $KS"
    return 0
  fi
  ks_project service >/dev/null
  ks_project demo >/dev/null
  ks_role member >/dev/null
  ks_role service >/dev/null
  ks_user demo-member "$(pw demo-member)" >/dev/null
  ks_grant demo demo-member member
  ks_user demo-admin "$(pw demo-admin)" >/dev/null
  ks_grant demo demo-admin admin
  ks_grant demo demo-admin member
  touch "$DIR/keystone.done"
  log "keystone up on $KS"
}

# ---- compute: Glance, Placement, Nova, Neutron, Cinder ---------------------------------------
up_compute() {
  up_keystone
  source "$HERE/openstack/compute.sh"
  compute_up
}

# ---- clouds.yaml -----------------------------------------------------------------------------
print_env() {
  [ -s "$DIR/passwords" ] || die "not set up: run scripts/openstack.sh up keystone"
  cat <<EOF
clouds:
  cfy-admin:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: admin
      password: $(pw admin)
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  cfy-member:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: demo-member
      password: $(pw demo-member)
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  cfy-demo-admin:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: demo-admin
      password: $(pw demo-admin)
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
EOF
}

status() {
  local f
  for f in "$DIR"/run/*.pid; do
    [ -e "$f" ] || continue
    local n
    n=$(basename "$f" .pid)
    if running "$n"; then echo "$n running (pid $(cat "$f"))"; else echo "$n DEAD (log $DIR/logs/$n.log)"; fi
  done
}

main() {
  mkdir -p "$DIR"/{etc,logs,run}
  chmod 711 "$DIR" # services run as mysql, rabbitmq, memcache: they traverse it
  case "${1:-}" in
  up)
    case "${2:-all}" in
    keystone) up_keystone ;;
    compute) up_compute ;;
    swift)
      up_keystone
      bash "$HERE/openstack/swift.sh" up
      ;;
    all)
      up_compute
      if [ -x "$HERE/openstack/swift.sh" ] || [ -f "$HERE/openstack/swift.sh" ]; then
        bash "$HERE/openstack/swift.sh" up
      fi
      ;;
    *) die "up keystone|compute|swift|all" ;;
    esac
    osc_install
    log "up in $(($(date +%s) - T0)) s; logs in $DIR/logs"
    ;;
  down)
    [ -f "$HERE/openstack/swift.sh" ] && bash "$HERE/openstack/swift.sh" down || true
    stop_all
    if [ "${2:-}" = "--purge" ]; then rm -rf "$DIR"; fi
    log "down"
    ;;
  install)
    os_install "${KEYSTONE_PKGS[@]}" "${COMPUTE_PKGS[@]}"
    osc_install
    ;;
  env) print_env ;;
  status) status ;;
  logs) echo "$DIR/logs" ;;
  osc) osc_install && echo "$OSC_VENV/bin/openstack" ;;
  lib) ;;
  *)
    sed -n '2,25p' "$0" >&2
    exit 2
    ;;
  esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
elif [ "${1:-}" != lib ]; then
  :
fi
