#!/bin/sh
# Compatibility shim for ONAP's cm-container setup-secret.sh (run from rc.local): links the
# service-account credentials mount back from /secret through cfy-init, which never copies
# the rotating token. Safe to run any number of times; `cfy-init run` already does it at boot.
set -e
exec "${CFY_INIT_BIN:-/usr/local/bin/cfy-init}" secret "$@"
