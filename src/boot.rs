//! The boot sequence: persist → secret → patch → supervise, and the single-step entry
//! points used by `cfy-init persist|secret|patch`.

use std::process::ExitCode;

use crate::config::Context;

/// Full boot. `main` non-empty: supervise just that command (tini-style).
pub fn run(ctx: Context, main: Vec<String>) -> anyhow::Result<ExitCode> {
    step_persist(&ctx)?;
    step_secret(&ctx)?;
    step_patch(&ctx)?;
    let _ = main;
    anyhow::bail!("supervision is not implemented yet")
}

pub fn step_persist(_ctx: &Context) -> anyhow::Result<()> {
    Ok(())
}

pub fn step_secret(_ctx: &Context) -> anyhow::Result<()> {
    Ok(())
}

pub fn step_patch(_ctx: &Context) -> anyhow::Result<()> {
    Ok(())
}
