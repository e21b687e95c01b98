//! `openstack-sim`: run the OpenStack simulator by hand, with one seeded manager server whose
//! VM runs cfy-init (the one built next to this binary, or `--cfy-init PATH`).
//!
//!   openstack-sim --dir /tmp/sim
//!
//! prints the OS_* variables to use with cfy-recover and runs until interrupted.

use std::path::PathBuf;

use clap::Parser;

use openstack_sim::guest::{self, GuestSpec};
use openstack_sim::{Sim, SimConfig};

#[derive(Parser)]
#[command(
    name = "openstack-sim",
    about = "A small stateful OpenStack simulator for cfy-recover"
)]
struct Cli {
    /// State directory (VM roots, volume directories).
    #[arg(long)]
    dir: PathBuf,
    /// The cfy-init binary the VMs run (default: the one next to this binary).
    #[arg(long)]
    cfy_init: Option<PathBuf>,
    /// Seed the manager's port as Nova-created (to see cfy-recover refuse).
    #[arg(long)]
    nova_port: bool,
    /// Hooks API port of the VMs.
    #[arg(long, default_value_t = 8090)]
    hooks_port: u16,
    /// Hooks API token written into the VMs.
    #[arg(long, default_value = "sim-hooks-token")]
    token: String,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let program = match cli.cfy_init {
        Some(p) => p,
        None => guest::sibling_cfy_init(&std::env::current_exe()?).ok_or_else(|| {
            anyhow::anyhow!("no cfy-init next to this binary: build it (cargo build -p cfy-init) or pass --cfy-init PATH")
        })?,
    };
    let config = SimConfig {
        guest: Some(guest::launcher(GuestSpec {
            program,
            args: vec!["run".into()],
            hooks_port: cli.hooks_port,
            web_port: cli.hooks_port + 1,
            token: cli.token,
        })),
        ..Default::default()
    };
    // SIGINT/SIGTERM are taken synchronously below, so the simulator's VMs are stopped
    // (Sim's Drop) instead of being left running; threads started later inherit the mask.
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGINT);
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals.thread_block()?;
    let sim = Sim::start(&cli.dir, config)?;
    let seeded = sim.seed_manager("cfy-manager", cli.nova_port);
    for (k, v) in sim.os_env() {
        println!("export {k}={v}");
    }
    println!(
        "# server cfy-manager {} on port {} ({}), volume {}, floating IP {}; hooks API http://{}:{}",
        seeded.server_id,
        seeded.port_id,
        seeded.ip,
        seeded.volume_id,
        seeded.fip_address,
        seeded.ip,
        cli.hooks_port
    );
    let signal = signals.wait()?;
    eprintln!("openstack-sim: {signal:?}: stopping the VMs");
    drop(sim);
    Ok(())
}
