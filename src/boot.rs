//! The boot sequence: persist → secret → patch → supervise, and the single-step entry
//! points used by `cfy-init persist|secret|patch`.

use std::process::ExitCode;

use crate::config::Context;

/// Full boot. `main` non-empty: supervise just that command (tini-style).
pub fn run(ctx: Context, main: Vec<String>) -> anyhow::Result<ExitCode> {
    let boot = crate::hooks::BootState::new();
    crate::snapshot::recover_at_boot(&ctx)?;
    for (name, step) in [
        (
            "persist",
            step_persist as fn(&Context) -> anyhow::Result<()>,
        ),
        ("secret", step_secret),
        ("patch", step_patch),
    ] {
        boot.step_running(name);
        if let Err(e) = step(&ctx) {
            boot.step_failed(name, &format!("{e:#}"));
            return Err(e);
        }
        boot.step_done(name, None);
    }
    boot.set_complete();
    supervise(&ctx, main, boot)
}

/// The last step: run the supervisor (or just `main`) until shutdown. Servers that share
/// the supervisor (hooks HTTP API, supervisord XML-RPC) are added here with `.task(...)`,
/// supervisord programs with `.services(specs, Origin::Supervisord)`.
fn supervise(
    ctx: &Context,
    main: Vec<String>,
    boot: crate::hooks::BootState,
) -> anyhow::Result<ExitCode> {
    let hooks_ctx = ctx.clone();
    let code = crate::supervise::Runner::new(ctx)
        .main(main)
        .task(move |handle| {
            Box::pin(async move {
                if let Err(e) = crate::hooks::serve(hooks_ctx, handle, boot).await {
                    tracing::error!("control API: {e}");
                }
            })
        })
        .run()?;
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
