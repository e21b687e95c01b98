#!/usr/bin/env bash
# A real OpenStack Swift (Debian 12's packages) on loopback, authenticated by the Keystone of
# scripts/openstack.sh, for cfy-init's off-host snapshot copies (snapshot.remote).
#
#   scripts/openstack/swift.sh up     Keystone (scripts/openstack.sh up keystone), then a loop-mounted
#                                     XFS with xattrs, rings, account/container/object servers and
#                                     the proxy (127.0.0.1:8090, pipeline `authtoken keystoneauth`),
#                                     the `swift` service user and the object-store endpoint
#   scripts/openstack/swift.sh down   stops the Swift servers (Keystone is left to openstack.sh)
#   scripts/openstack/swift.sh env    prints a clouds.yaml (clouds cfy-member, cfy-admin) and the
#                                     proxy URL as a comment
#   scripts/openstack/swift.sh stop NAME / start NAME   one server (proxy|object|container|account)
#
# Idempotent: an installed package, a mounted file system, built rings and a running server are
# kept. Everything binds 127.0.0.1. State in $CFY_OS_DIR/swift (default /var/lib/cfy-openstack).
# Tokens are not cached by the proxy (token_cache_time = -1), so a revoked token is refused at
# once. Recipe and costs: the project's Swift trial notes (swift.md).
set -euo pipefail

SWIFT_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../openstack.sh
source "$SWIFT_HERE/../openstack.sh" lib
SW="$(os_dir)/swift"
E="$SW/etc"
PROXY_PORT=8090
SWIFT_PKGS=(swift swift-proxy swift-account swift-container swift-object python3-swiftclient
  python3-keystonemiddleware memcached xfsprogs curl jq)

swift_fs() {
  mkdir -p "$SW"/{etc,cache,node}
  if ! mountpoint -q "$SW/node"; then
    [ -e "$SW/disk.img" ] || { truncate -s 4G "$SW/disk.img" && mkfs.xfs -q -i size=512 "$SW/disk.img"; }
    mount -o loop,noatime "$SW/disk.img" "$SW/node" || die "mount $SW/disk.img (needs loop devices)"
  fi
  mkdir -p "$SW/node/d1"
}

swift_conf() {
  local svc port
  cat >"$E/swift.conf" <<EOF
[swift-hash]
swift_hash_path_suffix = cfy-$(pw swift-hash)
swift_hash_path_prefix = cfy

[storage-policy:0]
name = Policy-0
default = yes
EOF
  for svc in account:6212 container:6211 object:6210; do
    port=${svc#*:}
    svc=${svc%:*}
    cat >"$E/$svc-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
workers = 0
devices = $SW/node
mount_check = false
swift_dir = $E
user = root
log_name = $svc-server
log_address = /dev/null
recon_cache_path = $SW/cache

[pipeline:main]
pipeline = healthcheck $svc-server

[app:$svc-server]
use = egg:swift#$svc

[filter:healthcheck]
use = egg:swift#healthcheck
EOF
  done
  cat >"$E/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PROXY_PORT
workers = 0
swift_dir = $E
user = root
log_name = proxy-server
log_address = /dev/null

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk authtoken keystoneauth copy slo dlo symlink proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = http://127.0.0.1:5000
auth_url = http://127.0.0.1:5000
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = service
username = swift
password = $(pw swift)
delay_auth_decision = True
token_cache_time = -1
memcached_servers = 127.0.0.1:11211

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:11211
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:symlink]
use = egg:swift#symlink
EOF
  chmod 600 "$E/proxy-server.conf"
}

swift_rings() {
  local svc port
  for svc in account:6212 container:6211 object:6210; do
    port=${svc#*:}
    svc=${svc%:*}
    [ -s "$E/$svc.ring.gz" ] && continue
    (
      cd "$E"
      swift-ring-builder "$svc.builder" create 10 1 1 >/dev/null
      swift-ring-builder "$svc.builder" add "r1z1-127.0.0.1:$port/d1" 100 >/dev/null
      swift-ring-builder "$svc.builder" rebalance >/dev/null
    ) || die "swift-ring-builder $svc"
  done
}

swift_start() { # swift_start account|container|object|proxy
  local conf="$E/$1-server.conf"
  start "swift-$1" "/usr/bin/swift-$1-server" "$conf" -v
}

swift_wait() {
  local port=$1 i
  waitport "$port"
  for i in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/healthcheck" >/dev/null && return 0
    sleep 0.25
  done
  die "swift on :$port does not answer /healthcheck"
}

swift_up() {
  mkdir -p "$(os_dir)"/{etc,logs,run}
  os_install "${SWIFT_PKGS[@]}"
  bash "$SWIFT_HERE/../openstack.sh" up keystone
  swift_fs
  swift_conf
  swift_rings
  local s
  for s in account container object proxy; do swift_start "$s"; done
  swift_wait 6212
  swift_wait 6211
  swift_wait 6210
  swift_wait "$PROXY_PORT"
  ks_user swift "$(pw swift)" >/dev/null
  ks_grant service swift admin
  ks_grant service swift service
  ks_endpoint swift object-store "http://127.0.0.1:$PROXY_PORT/v1/AUTH_%(project_id)s"
  log "swift up on http://127.0.0.1:$PROXY_PORT"
}

swift_stop() { # swift_stop NAME: kill -9 the server's session (as a crash would)
  local f="$(os_dir)/run/swift-$1.pid" sid pids
  [ -f "$f" ] || return 0
  sid=$(cat "$f")
  pids=$(ps -eo pid=,sid= | awk -v s="$sid" '$2==s{print $1}')
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
  rm -f "$f"
}

case "${1:-}" in
up) swift_up ;;
down) for s in proxy object container account; do swift_stop "$s"; done ;;
stop) swift_stop "${2:?stop proxy|object|container|account}" ;;
start)
  swift_start "${2:?start proxy|object|container|account}"
  case "$2" in proxy) swift_wait "$PROXY_PORT" ;; object) swift_wait 6210 ;; container) swift_wait 6211 ;; account) swift_wait 6212 ;; esac
  ;;
env)
  echo "# swift proxy: http://127.0.0.1:$PROXY_PORT"
  bash "$SWIFT_HERE/../openstack.sh" env
  ;;
*)
  sed -n '2,17p' "$0" >&2
  exit 2
  ;;
esac
