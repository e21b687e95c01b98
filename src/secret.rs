//! Restoring the Kubernetes service-account credentials mount (link or bind the source onto
//! the target) without ever copying the token, and keeping it restored.

use serde::{Deserialize, Serialize};

use crate::config::{Root, Section};

/// `secret:` section of the config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SecretConfig {}

impl Section for SecretConfig {
    fn reroot(&mut self, _root: &Root) {}
}
