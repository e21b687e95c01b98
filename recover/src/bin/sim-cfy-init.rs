//! `sim-cfy-init`: cfy-init's boot with the hooks API served next to the supervisor, as the
//! integrated `cfy-init run` does once boot.rs wires the hooks task. The simulator's VMs run
//! it (real supervisor, real hooks API, real snapshot engine) until the cfy-init binary
//! itself serves the API; then the e2e tests' launcher can point at cfy-init directly.
//!
//!   sim-cfy-init --root DIR --config FILE

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    root: PathBuf,
    #[arg(long)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sim-cfy-init: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    use cfy_init::config::{Config, Context, Root};
    let root = Root::new(&args.root);
    let config = Config::load(Some(&args.config), &root)?;
    cfy_init::logging::init(config.log.format, &config.log.level);
    let ctx = Context {
        config,
        root,
        config_path: Some(args.config.clone()),
    };
    cfy_init::boot::step_persist(&ctx)?;
    let boot = cfy_init::hooks::BootState::new();
    boot.set_complete();
    let api_ctx = ctx.clone();
    let code = cfy_init::supervise::Runner::new(&ctx)
        .task(move |handle| {
            Box::pin(async move {
                if let Err(e) = cfy_init::hooks::serve(api_ctx, handle, boot).await {
                    tracing::error!("hooks API: {e}");
                }
            })
        })
        .run()?;
    Ok(code)
}
