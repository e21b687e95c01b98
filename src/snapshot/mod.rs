//! Snapshot archives of the store (tar + zstd with a manifest), their verification, and
//! restore with staging, swap and rollback.

use serde::{Deserialize, Serialize};

use crate::config::{Root, Section};

/// `snapshot:` section of the config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {}

impl Section for SnapshotConfig {
    fn reroot(&mut self, _root: &Root) {}
}
