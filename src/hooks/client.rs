//! `cfy-init status|ready|snapshot|restore`: a small client of the control API.

use std::process::ExitCode;

use crate::cli::SnapshotCmd;
use crate::config::Context;

pub fn status(_ctx: &Context, _json: bool) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}

pub fn ready(_ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}

pub fn snapshot(_ctx: &Context, _cmd: SnapshotCmd) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}

pub fn restore(_ctx: &Context, _source: &str) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
