//! Seeding or adopting the persistent store (`/cfy-persist`) crash-safely, and linking each
//! state directory of the image into it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{Root, Section};

/// `persist:` section of the config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PersistConfig {
    /// The persistent store (a volume). Missing: continue without persistence, unless
    /// `required`.
    pub store: PathBuf,
    /// Fail the boot when the store is missing.
    pub required: bool,
}

impl Default for PersistConfig {
    fn default() -> Self {
        Self {
            store: PathBuf::from("/cfy-persist"),
            required: false,
        }
    }
}

impl Section for PersistConfig {
    fn reroot(&mut self, root: &Root) {
        root.apply(&mut self.store);
    }
}
