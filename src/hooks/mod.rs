//! The HTTP control API on a unix socket (and optionally TCP with a bearer token): health,
//! readiness, status, metrics, service control, snapshot and restore; plus its CLI client.

pub mod client;

use serde::{Deserialize, Serialize};

use crate::config::{Root, Section};

/// `hooks:` section of the config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {}

impl Section for HooksConfig {
    fn reroot(&mut self, _root: &Root) {}
}
