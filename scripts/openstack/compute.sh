# Sourced by scripts/openstack.sh (uses its functions): RabbitMQ, Glance, Placement, Nova (api,
# conductor, scheduler, compute on the fake virt driver), Neutron (ML2 linuxbridge + its agent on
# the fake host), Cinder (fake volume driver), and the demo resources the tests boot from.

up_rabbit() {
  local b="$DIR/rabbitmq"
  mkdir -p "$b"/{mnesia,log,home}
  [ -e "$b/enabled_plugins" ] || echo "[]." >"$b/enabled_plugins"
  touch "$b/rabbitmq.conf"
  chown -R rabbitmq:rabbitmq "$b"
  # Its own node name and epmd port: the project's tests run other RabbitMQ nodes beside it.
  start rabbitmq setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups env HOME="$b/home" \
    RABBITMQ_NODENAME=cfyos@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=$RABBIT_PORT RABBITMQ_DIST_PORT=25672 ERL_EPMD_PORT=4370 \
    ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_MNESIA_BASE="$b/mnesia" RABBITMQ_LOG_BASE="$b/log" \
    RABBITMQ_LOGS=- RABBITMQ_ENABLED_PLUGINS_FILE="$b/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$b/rabbitmq.conf" RABBITMQ_PID_FILE="$b/rabbit.pid" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    /usr/lib/rabbitmq/bin/rabbitmq-server
}

db_syncs() (
  set -x
  local E="$DIR/etc"
  glance-manage --config-file "$E/glance-api.conf" db_sync
  OS_PLACEMENT_CONFIG_DIR="$E" placement-manage --config-file "$E/placement.conf" db sync
  nova-manage --config-file "$E/nova.conf" api_db sync
  nova-manage --config-file "$E/nova.conf" cell_v2 list_cells | grep -q ' cell0 ' ||
    nova-manage --config-file "$E/nova.conf" cell_v2 map_cell0 \
      --database_connection "mysql+pymysql://os:$(pw db)@127.0.0.1/nova_cell0"
  nova-manage --config-file "$E/nova.conf" cell_v2 list_cells | grep -q ' cell1 ' ||
    nova-manage --config-file "$E/nova.conf" cell_v2 create_cell --name=cell1
  nova-manage --config-file "$E/nova.conf" db sync
  neutron-db-manage --config-file "$E/neutron.conf" upgrade heads
  cinder-manage --config-file "$E/cinder.conf" db sync
  echo DBSYNC_DONE
)

compute_catalog() {
  [ -e "$DIR/catalog.done" ] && return 0
  local s
  for s in glance placement nova neutron cinder; do
    ks_user "$s" "$(pw service)" >/dev/null
    ks_grant service "$s" admin
    ks_grant service "$s" service
  done
  ks_endpoint glance image http://127.0.0.1:9292
  ks_endpoint placement placement http://127.0.0.1:8778
  ks_endpoint nova compute http://127.0.0.1:8774/v2.1
  ks_endpoint neutron network http://127.0.0.1:9696
  ks_endpoint cinderv3 volumev3 'http://127.0.0.1:8776/v3/%(project_id)s'
  ks_endpoint cinder block-storage 'http://127.0.0.1:8776/v3/%(project_id)s'
  touch "$DIR/catalog.done"
}

# `openstack` as the admin of project `admin` (OS_CLOUD from a clouds.yaml of our own).
osa() { OS_CLIENT_CONFIG_FILE="$DIR/clouds.yaml" OS_CLOUD=cfy-admin "$OSC_VENV/bin/openstack" "$@"; }
osm() { OS_CLIENT_CONFIG_FILE="$DIR/clouds.yaml" OS_CLOUD=cfy-member "$OSC_VENV/bin/openstack" "$@"; }

compute_resources() {
  [ -e "$DIR/resources.done" ] && return 0
  osa flavor show m1.tiny >/dev/null 2>&1 || osa flavor create --vcpus 1 --ram 64 --disk 1 m1.tiny >/dev/null
  if ! osa image show tiny >/dev/null 2>&1; then
    head -c 1048576 /dev/zero >"$DIR/tiny.img"
    osa image create --disk-format raw --container-format bare --public --file "$DIR/tiny.img" tiny >/dev/null
  fi
  osa network show demo-net >/dev/null 2>&1 || osa network create --project demo demo-net >/dev/null
  osa subnet show demo-subnet >/dev/null 2>&1 ||
    osa subnet create --project demo --network demo-net --subnet-range 10.0.0.0/24 demo-subnet >/dev/null
  osa network show public >/dev/null 2>&1 ||
    osa network create --external --provider-network-type flat --provider-physical-network public public >/dev/null
  osa subnet show public-subnet >/dev/null 2>&1 ||
    osa subnet create --network public --subnet-range 172.24.4.0/24 --no-dhcp public-subnet >/dev/null
  # Floating IPs need a router from the demo subnet to the external network (no L3 agent runs).
  if ! osm router show demo-router >/dev/null 2>&1; then
    osm router create demo-router >/dev/null
    osa router set --external-gateway public demo-router
    osm router add subnet demo-router demo-subnet
  fi
  touch "$DIR/resources.done"
}

compute_up() {
  os_install "${COMPUTE_PKGS[@]}"
  osc_install
  mkdir -p "$DIR"/{glance/images,glance/tasks,glance/staging,nova/state,nova/lock,neutron/state,cinder/state,cinder/lock}
  local f
  for f in glance-api.conf placement.conf nova.conf nova-host2.conf neutron.conf linuxbridge_agent.ini \
    linuxbridge_agent-host2.ini cinder.conf; do
    render "$f"
  done
  print_env >"$DIR/clouds.yaml.tmp" && chmod 600 "$DIR/clouds.yaml.tmp" && mv "$DIR/clouds.yaml.tmp" "$DIR/clouds.yaml"
  up_rabbit
  compute_catalog
  if [ ! -e "$DIR/dbsync.done" ]; then
    log "database syncs"
    db_syncs >"$DIR/logs/dbsync.log" 2>&1 || die "database syncs (see $DIR/logs/dbsync.log)"
    touch "$DIR/dbsync.done"
  fi
  waitport "$RABBIT_PORT"
  local E="$DIR/etc"
  start glance-api glance-api --config-file "$E/glance-api.conf"
  start placement env OS_PLACEMENT_CONFIG_DIR="$E" uwsgi --plugin python3 --http-socket 127.0.0.1:8778 \
    --wsgi-file /usr/bin/placement-api --master --processes 1 --threads 4 --lazy-apps --die-on-term \
    --add-header 'Connection: close'
  start nova-api nova-api --config-file "$E/nova.conf"
  start nova-conductor nova-conductor --config-file "$E/nova.conf"
  start nova-scheduler nova-scheduler --config-file "$E/nova.conf"
  start neutron-server neutron-server --config-file "$E/neutron.conf"
  start lb-agent neutron-linuxbridge-agent --config-file "$E/neutron.conf" --config-file "$E/linuxbridge_agent.ini"
  # Two compute hosts (each with its agent, or Neutron refuses to bind a port there): a test
  # can force one down and the rebuilt server still finds room on the other.
  start lb-agent-2 neutron-linuxbridge-agent --config-file "$E/neutron.conf" \
    --config-file "$E/linuxbridge_agent.ini" --config-file "$E/linuxbridge_agent-host2.ini"
  start cinder-api cinder-api --config-file "$E/cinder.conf"
  start cinder-scheduler cinder-scheduler --config-file "$E/cinder.conf"
  start cinder-volume cinder-volume --config-file "$E/cinder.conf"
  waitport 8778
  waitport 8774
  # nova-compute without its package (which pulls libvirt and qemu): python3-nova's entry point.
  start nova-compute $PY "$HERE/openstack/nova-compute.py" --config-file "$E/nova.conf"
  start nova-compute-2 $PY "$HERE/openstack/nova-compute.py" --config-file "$E/nova.conf" \
    --config-file "$E/nova-host2.conf"
  waitport 9292
  waitport 9696
  waitport 8776
  log "APIs up"
  if ((STARTED == 0)) && [ -e "$DIR/resources.done" ]; then
    log "compute up (already running)"
    return 0
  fi
  local i
  for i in $(seq 1 120); do
    [ "$(osa compute service list --service nova-compute -f value -c State 2>/dev/null | grep -c up)" -ge 2 ] && break
    sleep 1
  done
  nova-manage --config-file "$E/nova.conf" cell_v2 discover_hosts >>"$DIR/logs/nova-manage.log" 2>&1
  compute_resources
  # A port is bound only to a live agent ("Refusing to bind port ... to dead agent").
  local alive
  for i in $(seq 1 120); do
    alive=$(osa network agent list --agent-type linux-bridge -f value -c Host -c Alive | awk '$2=="True"{print $1}' | sort -u | tr '\n' ' ')
    [ "$alive" = "fakehost1 fakehost2 " ] && break
    sleep 1
  done
  [ "$alive" = "fakehost1 fakehost2 " ] || die "linuxbridge agents not alive on both hosts (alive: $alive)"
  nova-manage --config-file "$E/nova.conf" cell_v2 discover_hosts >>"$DIR/logs/nova-manage.log" 2>&1
  log "compute up"
}
