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
    let mut runner = crate::supervise::Runner::new(ctx).main(main.clone());
    if main.is_empty() && ctx.config.supervisord.enabled {
        let loaded = crate::supervisord::load(ctx)?;
        runner = runner.services(
            loaded.programs.clone(),
            crate::supervise::Origin::Supervisord,
        );
        let ctx = ctx.clone();
        runner = runner.task(move |handle| {
            Box::pin(async move {
                let log = crate::supervisord::mainlog::global();
                if let Err(e) = crate::supervisord::serve(ctx, handle, loaded, log).await {
                    tracing::error!("{e}");
                }
            })
        });
    }
    let code = runner.run()?;
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
