//! cfy-init: PID 1 for the Cloudify Manager container.
//!
//! The binary runs a fixed sequence of boot steps, each owned by one module, and then
//! supervises the manager's services until it is told to stop:
//!
//! | module        | owns                                                              |
//! |---------------|-------------------------------------------------------------------|
//! | [`config`]    | the YAML configuration, its embedded default and `--root`          |
//! | [`persist`]   | seeding / adopting the persistent store and linking into it        |
//! | [`secret`]    | restoring the service-account credentials mount                    |
//! | [`patch`]     | comment-keeping edits of Cloudify's `config.yaml`                  |
//! | [`pid1`]      | PID-1 duties: reaping, signals, subreaper; `run --` and its aliases |
//! | [`supervise`] | the service state machine, dependency order, restarts, shutdown    |
//! | [`supervisord`]| supervisord's config format and XML-RPC interface               |
//! | [`hooks`]     | the HTTP control API (health, readiness, status, metrics, ...)     |
//! | [`snapshot`]  | snapshot archives of the store, verification and restore           |
//! | [`boot`]      | the order in which the above run                                  |

pub mod boot;
pub mod cli;
pub mod config;
pub mod fsutil;
pub mod hooks;
pub mod logging;
pub mod patch;
pub mod persist;
pub mod pid1;
pub mod process;
pub mod secret;
pub mod snapshot;
pub mod supervise;
pub mod supervisord;
