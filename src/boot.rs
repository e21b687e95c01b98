//! The boot sequence: persist → secret → patch → supervise, and the single-step entry
//! points used by `cfy-init persist|secret|patch`.
//!
//! Each step is recorded in a [`BootState`] that the control API serves as `/status`; a
//! step that fails stops the boot (non-zero exit, so Docker or Kubernetes restarts the
//! container) unless its section says it is not required.

use std::process::ExitCode;

use crate::config::Context;
use crate::hooks::BootState;
use crate::supervise::{Origin, Runner};

/// Full boot. `main` non-empty: supervise just that command (tini-style).
pub fn run(
    ctx: Context,
    main: Vec<String>,
    flags: &crate::pid1::foreground::RunFlags,
) -> anyhow::Result<ExitCode> {
    let boot = BootState::new();
    // A restore that was cut off mid-swap is rolled back before anything reads the store.
    // One line (no doubled cause): it names the directory and the fix.
    crate::snapshot::recover_at_boot(&ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut first_seed = false;
    record(&boot, "persist", || {
        let report = persist_logged(&ctx)?;
        boot.set_persist_report(&report);
        boot.add_seed_bytes(report.directories.iter().map(|d| d.bytes_copied).sum());
        first_seed = report.first_seed;
        Ok(())
    })?;
    record(&boot, "secret", || step_secret(&ctx))?;
    record(&boot, "patch", || {
        if first_seed {
            first_boot_password(&ctx)?;
        }
        step_patch(&ctx)
    })?;
    boot.set_complete();
    if !main.is_empty() {
        return Ok(foreground(&ctx, &main, flags));
    }
    supervise(&ctx, main, boot)
}

/// Run one step, recording its outcome for `/status`.
fn record(
    boot: &BootState,
    name: &str,
    step: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    boot.step_running(name);
    match step() {
        Ok(()) => {
            boot.step_done(name, None);
            Ok(())
        }
        Err(e) => {
            boot.step_failed(name, &format!("{e:#}"));
            Err(e)
        }
    }
}

/// On the store's first seed, write the admin password into config.yaml (before the
/// manager's starter first creates its database from it), then record that it is done. A
/// failure is retried at the next boot, since the seed stays unconfirmed; it stops the boot
/// only when `patch.required`. `cfy-init persist` alone (an init container) leaves this to
/// the full boot that follows.
fn first_boot_password(ctx: &Context) -> anyhow::Result<()> {
    match crate::patch::set_admin_password(ctx) {
        Ok(()) => Ok(crate::persist::confirm_first_seed(ctx)?),
        Err(e) if !ctx.config.patch.required => {
            tracing::error!("{e}; the admin password is tried again at the next boot");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The last step: run the supervisor (or just `main`) until shutdown, with the control
/// API, the supervisord XML-RPC server and the credentials watcher as tasks beside it.
fn supervise(ctx: &Context, main: Vec<String>, boot: BootState) -> anyhow::Result<ExitCode> {
    let main_mode = !main.is_empty();
    let mut runner = Runner::new(ctx).main(main);

    let hooks_ctx = ctx.clone();
    runner = runner.task(move |handle| {
        Box::pin(async move {
            if let Err(e) = crate::hooks::serve(hooks_ctx, handle, boot).await {
                tracing::error!("control API: {e}");
            }
        })
    });

    if !main_mode && ctx.config.supervisord.enabled {
        let loaded = crate::supervisord::load(ctx)?;
        runner = runner.services(loaded.programs.clone(), Origin::Supervisord);
        let rpc_ctx = ctx.clone();
        runner = runner.task(move |handle| {
            Box::pin(async move {
                let log = crate::supervisord::mainlog::global();
                if let Err(e) = crate::supervisord::serve(rpc_ctx, handle, loaded, log).await {
                    tracing::error!("supervisord XML-RPC: {e}");
                }
            })
        });
    }

    let watch_ctx = ctx.clone();
    runner = runner.task(move |_| Box::pin(crate::secret::watch(watch_ctx)));

    Ok(runner.run()?)
}

/// `run -- CMD`: cfy-init as a transparent init for CMD alone (no control API, no
/// services), exiting with its status.
fn foreground(
    ctx: &Context,
    main: &[String],
    flags: &crate::pid1::foreground::RunFlags,
) -> ExitCode {
    let opts =
        crate::pid1::foreground::Options::from_flags(flags, ctx.config.supervise.shutdown_deadline);
    let code = crate::pid1::foreground::run(main, &opts);
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// `cfy-init persist`: seed or adopt the store and link into it, nothing else.
pub fn step_persist(ctx: &Context) -> anyhow::Result<()> {
    persist_logged(ctx).map(|_| ())
}

fn persist_logged(ctx: &Context) -> anyhow::Result<crate::persist::PersistReport> {
    let report = crate::persist::run(ctx)?;
    for d in &report.directories {
        tracing::info!(
            dir = %d.path.display(),
            outcome = %label(&d.outcome),
            link = %label(&d.link),
            files = d.files_copied,
            bytes = d.bytes_copied,
            "persist"
        );
    }
    Ok(report)
}

/// The serde name of an enum value (`already-present`), for log lines: operators read the
/// same words as in `/status`, not Rust's (`AlreadyPresent`).
fn label<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
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
