//! The boot sequence: persist → secret → patch → supervise, and the single-step entry
//! points used by `cfy-init persist|secret|patch`.

use std::process::ExitCode;

use crate::config::Context;

/// Full boot. `main` non-empty: supervise just that command (tini-style).
pub fn run(ctx: Context, main: Vec<String>) -> anyhow::Result<ExitCode> {
    step_persist(&ctx)?;
    step_secret(&ctx)?;
    step_patch(&ctx)?;
    supervise(&ctx, main)
}

/// The last step: run the supervisor (or just `main`) until shutdown. Servers that share
/// the supervisor (hooks HTTP API, supervisord XML-RPC) are added here with `.task(...)`,
/// supervisord programs with `.services(specs, Origin::Supervisord)`.
fn supervise(ctx: &Context, main: Vec<String>) -> anyhow::Result<ExitCode> {
    let code = crate::supervise::Runner::new(ctx).main(main).run()?;
    Ok(code)
}

pub fn step_persist(ctx: &Context) -> anyhow::Result<()> {
    // The report stays available through `persist::last_report()` for the control API.
    let report = crate::persist::run(ctx)?;
    for d in &report.directories {
        tracing::info!(
            dir = %d.path.display(),
            outcome = ?d.outcome,
            link = ?d.link,
            files = d.files_copied,
            bytes = d.bytes_copied,
            "persist"
        );
    }
    Ok(())
}

pub fn step_secret(_ctx: &Context) -> anyhow::Result<()> {
    Ok(())
}

pub fn step_patch(_ctx: &Context) -> anyhow::Result<()> {
    Ok(())
}
