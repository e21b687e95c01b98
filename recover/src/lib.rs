//! cfy-recover: rebuilds a failed Cloudify Manager VM on OpenStack, keeping its private IP
//! (Neutron port), floating IP and data volume, then restores a snapshot through cfy-init's
//! hooks API. Every mutating step is journalled first so `resume` can finish after a crash.
//!
//! | module      | owns                                                              |
//! |-------------|-------------------------------------------------------------------|
//! | [`creds`]   | clouds.yaml / OS_* credentials (re-exported from `cfy-openstack`)  |
//! | [`cloud`]   | Keystone auth, catalog, microversions, retries, typed API calls    |
//! | [`manager`] | cfy-init's hooks API client and snapshot archive verification      |
//! | [`journal`] | the crash-safe journal and the state-directory lock                |
//! | [`plan`]    | inspection: what is found, what would be done (read-only)          |
//! | [`inventory`] | the manager's inventory, to rebuild when its server is gone      |
//! | [`gone`]    | the plan of a manager whose server is already gone               |
//! | [`flow`]    | the resumable steps                                                |
//! | [`report`]  | the end-of-run report: steps, every attempt, total wall time        |
//! | [`checks`]  | plan's quota and reachability checks                              |
//! | [`watch`]   | the watcher that heals: decisions, lease, metrics, polling loop     |
//! | [`cli`]     | the command line                                                   |
//!
//! The OpenStack simulator the tests run against is test support, in its own package
//! (`recover/sim`, `openstack-sim`), never linked into cfy-recover.

pub mod checks;
pub mod cli;
pub mod cloud;
pub mod flow;
pub mod gone;
pub mod inventory;
pub mod journal;
pub mod manager;
pub mod plan;
pub mod report;
pub mod watch;

/// Credentials live in the crate shared with cfy-init.
pub use cfy_openstack::creds;
