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

/// Service-account credentials: a problem is a warning unless `secret.required`.
pub fn step_secret(ctx: &Context) -> anyhow::Result<()> {
    match crate::secret::run(ctx) {
        Ok(_) => Ok(()),
        Err(e) if !ctx.config.secret.required => {
            tracing::error!("service-account credentials: {e}; continuing");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Cloudify's config.yaml: a problem is one error line unless `patch.required`.
pub fn step_patch(ctx: &Context) -> anyhow::Result<()> {
    match crate::patch::run(ctx) {
        Ok(_) => Ok(()),
        Err(e) if !ctx.config.patch.required => {
            tracing::error!("{e}; continuing without the config patch");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
