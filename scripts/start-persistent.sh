#!/bin/sh
# Compatibility shim for ONAP's cm-container start-persistent.sh (the legacy image's CMD):
# images and charts that still run it get cfy-init's crash-safe persist step, then cfy-init
# as PID 1 in place of the old `exec /sbin/init`. Arguments go to `cfy-init run` (e.g.
# `-- CMD ARGS...`). CFY_INIT_CONFIG / CFY_INIT_ROOT are honoured by cfy-init itself.
set -e
CFY_INIT="${CFY_INIT_BIN:-/usr/local/bin/cfy-init}"
"$CFY_INIT" persist
exec "$CFY_INIT" run "$@"
