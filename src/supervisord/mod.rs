//! supervisord compatibility: reads `supervisord.conf` and its includes into
//! [`crate::supervise::ServiceSpec`]s, and serves supervisord's XML-RPC interface on its
//! unix socket so that `supervisorctl` and Cloudify's own code drive cfy-init unchanged.

use serde::{Deserialize, Serialize};

use crate::config::{Root, Section};

/// `supervisord:` section of the config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisordConfig {}

impl Section for SupervisordConfig {
    fn reroot(&mut self, _root: &Root) {}
}
