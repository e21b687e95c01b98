//! Comment-keeping, idempotent edits of Cloudify's `config.yaml`: import-resolver rules,
//! the admin password and `service_management`.

use serde::{Deserialize, Serialize};

use crate::config::{Root, Section};

/// `patch:` section of the config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PatchConfig {}

impl Section for PatchConfig {
    fn reroot(&mut self, _root: &Root) {}
}
