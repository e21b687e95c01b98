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
//! | [`flow`]    | inspection (plan) and the resumable steps                          |
//! | [`cli`]     | the command line                                                   |
//! | [`sim`]     | the OpenStack simulator used by the tests (and `openstack-sim`)    |

pub mod cli;
pub mod cloud;
pub mod flow;
pub mod journal;
pub mod manager;
pub mod sim;

/// Credentials live in the crate shared with cfy-init.
pub use cfy_openstack::creds;
