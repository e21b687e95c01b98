#!/usr/bin/env bash
# Lays out a small Cloudify-Manager-shaped image tree under $1 for the demo: the state
# directories of the 2021 ONAP list, a 5.1-style config.yaml, supervisord program files
# with stand-in commands, service-account credentials at /secret and an empty volume.
set -euo pipefail
ROOT=$1
mkdir -p "$ROOT"/{cfy-persist,secret,run,tmp,etc/supervisord.d,opt/onap/cm-secrets}
mkdir -p "$ROOT/var" && ln -sfn ../run "$ROOT/var/run"

for d in var/lib/pgsql/9.5/data var/lib/rabbitmq etc/cloudify/ssl opt/cfy opt/cloudify \
         opt/cloudify-stage/conf opt/manager/resources/blueprints opt/mgmtworker/env/plugins \
         opt/mgmtworker/work/deployments opt/restservice; do
  mkdir -p "$ROOT/$d"
  echo "image content of /$d" > "$ROOT/$d/README"
done
echo "demo-cookie" > "$ROOT/var/lib/rabbitmq/.erlang.cookie"
chmod 0400 "$ROOT/var/lib/rabbitmq/.erlang.cookie"
ln -s README "$ROOT/opt/manager/resources/blueprints/latest"

cat > "$ROOT/etc/cloudify/config.yaml" <<'YAML'
manager:
  # Admin credentials of the manager (set on first seed from $CMPASS or the secret file).
  security:
    admin_username: admin
    admin_password: ''
provider_context:
  import_resolver:
    parameters:
      fallback: true
      rules:
      - http://www.getcloudify.org/spec: file:///opt/manager/resources/spec
      - http://cloudify.co/spec: file:///opt/manager/resources/spec
service_management: systemd
YAML

printf 'demo-token' > "$ROOT/secret/token"
printf 'demo-ca' > "$ROOT/secret/ca.crt"
printf 'onap' > "$ROOT/secret/namespace"

cat > "$ROOT/etc/supervisord.conf" <<'CONF'
[unix_http_server]
file=/tmp/supervisor.sock
chmod=0770

[supervisord]
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix:///tmp/supervisor.sock

[program:cloudify-starter]
command=/bin/sh -c "echo configuring the manager; sleep 1; echo configured"
autorestart=false
startsecs=0
stdout_logfile=/dev/fd/1
stdout_logfile_maxbytes=0
redirect_stderr=true

[include]
files=/etc/supervisord.d/*.conf
CONF

cat > "$ROOT/etc/supervisord.d/demo-web.cloudify.conf" <<'CONF'
[program:demo-web]
command=/bin/sh -c "echo serving; exec sleep 100000"
autorestart=true
startsecs=1
stdout_logfile=/dev/fd/1
stdout_logfile_maxbytes=0
redirect_stderr=true
CONF
