//! `openstack-sim`: run the OpenStack simulator by hand, with one seeded manager server.
//!
//!   openstack-sim serve --dir /tmp/sim [--guest cfy-init-command...]
//!
//! prints the OS_* variables to use with cfy-recover and runs until interrupted.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "openstack-sim",
    about = "A small stateful OpenStack simulator for cfy-recover"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the simulator with one manager server seeded.
    Serve {
        /// State directory (server roots, volume directories).
        #[arg(long)]
        dir: PathBuf,
        /// Seed the manager's port as Nova-created (to see cfy-recover refuse).
        #[arg(long)]
        nova_port: bool,
        /// Hooks API port of the guests.
        #[arg(long, default_value_t = 8780)]
        guest_port: u16,
        /// Guest command; `{root}`, `{ip}` and `{port}` are replaced. Default: the stub manager.
        #[arg(last = true)]
        guest: Vec<String>,
    },
    /// The stand-in manager (health, readiness, snapshot, restore of ROOT/cfy-persist).
    StubManager {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match Cli::parse().command {
        Cmd::StubManager {
            root,
            listen,
            token_file,
        } => {
            let token = token_file
                .map(std::fs::read_to_string)
                .transpose()?
                .map(|t| t.trim().to_owned());
            tokio::runtime::Runtime::new()?
                .block_on(cfy_recover::sim::stub::serve(root, listen, token))?;
            Ok(())
        }
        Cmd::Serve {
            dir,
            nova_port,
            guest_port,
            guest,
        } => {
            let exe = std::env::current_exe()?;
            let launcher: cfy_recover::sim::GuestLauncher = Arc::new(move |env| {
                let fill = |a: &str| {
                    a.replace("{root}", &env.root.display().to_string())
                        .replace("{ip}", &env.ip)
                        .replace("{port}", &guest_port.to_string())
                };
                if guest.is_empty() {
                    let mut c = Command::new(&exe);
                    c.arg("stub-manager")
                        .arg("--root")
                        .arg(&env.root)
                        .arg("--listen")
                        .arg(format!("{}:{guest_port}", env.ip));
                    c
                } else {
                    let mut c = Command::new(fill(&guest[0]));
                    c.args(guest[1..].iter().map(|a| fill(a)));
                    c
                }
            });
            let config = cfy_recover::sim::SimConfig {
                guest: Some(launcher),
                ..Default::default()
            };
            let sim = cfy_recover::sim::Sim::start(&dir, config)?;
            let seeded = sim.seed_manager("cfy-manager", nova_port);
            for (k, v) in sim.os_env() {
                println!("export {k}={v}");
            }
            println!(
                "# server cfy-manager {} on port {} ({}), volume {}, floating IP {}",
                seeded.server_id, seeded.port_id, seeded.ip, seeded.volume_id, seeded.fip_address
            );
            loop {
                std::thread::park();
            }
        }
    }
}
