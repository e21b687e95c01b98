//! `cfy-recover` command line: plan, recover, status, resume, inventory, watch. The only place (with main.rs)
//! that uses `anyhow`. Exit codes: 0 done, 1 stopped (journal kept, `resume` continues),
//! 2 refused or bad input (nothing changed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::cloud::{Cloud, Policy};
use crate::flow::{self, AddressChoice, FlowError, Options, Runner, SnapshotChoice, Waits};
use crate::inventory::{self, Inventory};
use crate::journal::{self, Journal, JOURNAL_FILE};
use crate::watch::{Policy as WatchPolicy, WatchOptions};

#[derive(Debug, Parser)]
#[command(
    name = "cfy-recover",
    version,
    about = "Rebuild a failed Cloudify Manager VM on OpenStack: same port, floating IP and volume"
)]
pub struct Cli {
    /// Cloud from clouds.yaml (else OS_CLOUD, else the OS_* variables).
    #[arg(long, global = true)]
    pub os_cloud: Option<String>,
    /// Catalog interface of the endpoints: public, internal or admin.
    #[arg(long, global = true, env = "OS_INTERFACE")]
    pub os_interface: Option<String>,
    /// Where the journal and downloaded snapshots live.
    #[arg(long, global = true, env = "CFY_RECOVER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Timeout of one API call.
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    pub http_timeout: Duration,
    /// Attempts per API call on 5xx, timeouts and dropped connections.
    #[arg(long, global = true, default_value_t = 6)]
    pub retries: u32,
    /// First back-off delay (doubles each attempt, up to 20s).
    #[arg(long, global = true, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub backoff: Duration,
    /// Polling interval of status transitions.
    #[arg(long, global = true, default_value = "2s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// Longest wait for one transition (delete, boot, attach...).
    #[arg(long, global = true, default_value = "10m", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,
    /// Longest wait for a detach before going on with the delete.
    #[arg(long, global = true, default_value = "60s", value_parser = humantime::parse_duration)]
    pub detach_timeout: Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dry run: what was found and what `recover` would do. Changes nothing.
    Plan(Target),
    /// Rebuild the server. Needs --yes.
    Recover {
        #[command(flatten)]
        target: Target,
        /// Confirm: the server will be deleted and re-created.
        #[arg(long)]
        yes: bool,
    },
    /// Show the journal of the current (or last) recovery.
    Status,
    /// Continue a recovery that stopped.
    Resume,
    /// The manager's inventory (what a rebuild needs when its server is gone).
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// Watch the manager and rebuild it from the inventory when it failed for --failures
    /// intervals and the cloud confirms its server is unhealthy. Runs until stopped.
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The manager's inventory (`inventory save`); re-read every interval, refreshed by
    /// each recovery, so the watcher follows the new server.
    #[arg(long)]
    pub inventory: PathBuf,
    /// Time between two probes of the manager and the cloud.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Failed intervals in a row (with the cloud confirming) before a recovery.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub failures: u32,
    /// Least time between two recoveries (kept in the lease: shared by all watchers).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub cooldown: Duration,
    /// How long the watcher lease lasts unless renewed (default: 3 intervals).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lease_ttl: Option<Duration>,
    /// This watcher's id in the lease (default: HOSTNAME:PID).
    #[arg(long)]
    pub owner: Option<String>,
    /// Port of the manager's hooks API (`/healthz` on its fixed and floating IPs).
    #[arg(long, default_value_t = 8090)]
    pub manager_port: u16,
    /// Timeout of one `/healthz` probe.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub probe_timeout: Duration,
    /// Which address the recovery waits on for readiness.
    #[arg(long, value_enum, default_value = "fixed")]
    pub manager_address: AddressChoice,
    /// File holding the hooks API bearer token (for the recovery's snapshot restore).
    #[arg(long)]
    pub manager_token_file: Option<PathBuf>,
    /// Longest wait for the rebuilt manager to become ready.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// The Swift container of the manager's off-host snapshot copies: a failed manager
    /// cannot take a snapshot, so the recovery restores the newest copy from here.
    #[arg(long, value_name = "CONTAINER", env = "CFY_RECOVER_REMOTE_SNAPSHOTS")]
    pub remote_snapshots: Option<String>,
    /// Write Prometheus text metrics here every interval (node-exporter textfile format).
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    /// Stop after this many recoveries (default: never).
    #[arg(long)]
    pub max_recoveries: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Read the manager's server, ports, volumes and floating IPs and save them (read-only
    /// for the cloud; the file is replaced atomically).
    Save {
        /// The manager's server, by name or id.
        #[arg(long)]
        server: String,
        /// Where to write it (default: STATE_DIR/inventory.json).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct Target {
    /// The manager's server, by name or id.
    #[arg(long)]
    pub server: String,
    /// Restore this snapshot archive (verified first).
    #[arg(long, conflicts_with_all = ["take_snapshot", "no_snapshot"])]
    pub snapshot: Option<PathBuf>,
    /// Require a fresh snapshot from the running manager (refuse if it does not answer).
    /// Without any snapshot option one is taken when the manager answers.
    #[arg(long, conflicts_with = "no_snapshot")]
    pub take_snapshot: bool,
    /// Do not snapshot or restore: the volume alone carries the data.
    #[arg(long)]
    pub no_snapshot: bool,
    /// The Swift container of the manager's off-host snapshot copies (cfy-init's
    /// `snapshot.remote.container`): when the manager does not answer, its newest copy is
    /// downloaded, verified and restored instead of recovering with the volume alone.
    #[arg(
        long,
        value_name = "CONTAINER",
        env = "CFY_RECOVER_REMOTE_SNAPSHOTS",
        conflicts_with_all = ["snapshot", "take_snapshot", "no_snapshot"]
    )]
    pub remote_snapshots: Option<String>,
    /// Allow replacing a port that Nova created (and will delete): the private IP may change.
    #[arg(long)]
    pub accept_new_ip: bool,
    /// The manager's hooks API URL (default: http://FLOATING-or-FIXED-IP:PORT).
    #[arg(long)]
    pub manager_url: Option<String>,
    /// Port of the hooks API TCP listener.
    #[arg(long, default_value_t = 8090)]
    pub manager_port: u16,
    /// Which address reaches the manager when no URL is given.
    #[arg(long, value_enum, default_value = "floating")]
    pub manager_address: AddressChoice,
    /// File holding the hooks API bearer token.
    #[arg(long)]
    pub manager_token_file: Option<PathBuf>,
    /// Longest wait for the manager to become ready (and for a snapshot or restore).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// A floating IP to give the new server (default: the ones on the server's ports).
    #[arg(long)]
    pub floating_ip: Option<String>,
    /// User data for the new server (when the old one's is not visible to you).
    #[arg(long)]
    pub user_data: Option<PathBuf>,
    /// The manager's inventory: used when its server is gone, refreshed when the recovery
    /// finishes (default: STATE_DIR/inventory.json when it names this server).
    #[arg(long)]
    pub inventory: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cfy-recover: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            // Failures of a run return Ok(1) from `run`; anything else failed before any
            // change (credentials, inspection, bad options).
            eprintln!("cfy-recover: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CFY_RECOVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn connect(cli: &Cli, os_cloud: Option<&str>) -> anyhow::Result<Cloud> {
    let env = |k: &str| std::env::var(k).ok();
    let creds = crate::creds::load(os_cloud, cli.os_interface.as_deref(), &env)?;
    let policy = Policy {
        attempts: cli.retries.max(1),
        backoff: cli.backoff,
        max_backoff: Duration::from_secs(20),
        timeout: cli.http_timeout,
        budget: cli.wait_timeout,
    };
    Ok(Cloud::new(creds, policy)?)
}

fn options(cli: &Cli, t: &Target) -> Options {
    let snapshot = match (&t.snapshot, t.take_snapshot, t.no_snapshot) {
        (Some(f), _, _) => SnapshotChoice::File(f.clone()),
        (None, true, _) => SnapshotChoice::Take,
        (None, false, true) => SnapshotChoice::None,
        (None, false, false) => SnapshotChoice::Auto,
    };
    Options {
        server: t.server.clone(),
        snapshot,
        remote_snapshots: t.remote_snapshots.clone(),
        accept_new_ip: t.accept_new_ip,
        manager_url: t.manager_url.clone(),
        manager_port: t.manager_port,
        manager_address: t.manager_address,
        token_file: t.manager_token_file.clone(),
        ready_timeout: t.ready_timeout,
        user_data_file: t.user_data.clone(),
        os_cloud: cli.os_cloud.clone(),
        floating_ip: t.floating_ip.clone(),
        state_dir: state_dir(cli),
        inventory: t.inventory.clone(),
    }
}

fn waits(cli: &Cli) -> Waits {
    Waits {
        poll: cli.poll,
        timeout: cli.wait_timeout,
        detach_timeout: cli.detach_timeout,
    }
}

fn state_dir(cli: &Cli) -> PathBuf {
    cli.state_dir
        .clone()
        .unwrap_or_else(journal::default_state_dir)
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let state_dir = state_dir(&cli);
    let path = state_dir.join(JOURNAL_FILE);
    match &cli.command {
        Command::Plan(t) => {
            let cloud = connect(&cli, cli.os_cloud.as_deref())?;
            let plan = flow::inspect(&cloud, &options(&cli, t)).await?;
            print_plan(&plan, cli.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            let j = Journal::load(&path)?;
            let holder = journal::lock_holder(&state_dir);
            match (j, cli.json) {
                (None, true) => println!("null"),
                (None, false) => println!("no recovery journal in {}", state_dir.display()),
                (Some(j), true) => {
                    let mut v = redacted(&j);
                    v["process"] = match holder {
                        Some(pid) => serde_json::json!({ "running": true, "pid": pid }),
                        None => serde_json::json!({ "running": false }),
                    };
                    println!("{}", pretty(&v));
                }
                (Some(j), false) => {
                    print!("{}", flow::report(&j));
                    if !j.finished {
                        match holder {
                            Some(pid) => println!("  process: running (pid {pid} holds the journal)"),
                            None => println!("  process: none: no cfy-recover holds the journal (it stopped or was killed); run `cfy-recover resume`"),
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inventory(InventoryCommand::Save { server, file }) => {
            let cloud = connect(&cli, cli.os_cloud.as_deref())?;
            let target = Target {
                server: server.clone(),
                snapshot: None,
                take_snapshot: false,
                no_snapshot: true,
                remote_snapshots: None,
                // Recorded as found: a Nova-created port is noted, not refused.
                accept_new_ip: true,
                manager_url: None,
                manager_port: 8090,
                manager_address: AddressChoice::Fixed,
                manager_token_file: None,
                ready_timeout: Duration::from_secs(1),
                floating_ip: None,
                user_data: None,
                inventory: None,
            };
            let plan = flow::inspect(&cloud, &options(&cli, &target)).await?;
            if plan.journal.old_server.status == "DELETED" {
                anyhow::bail!(FlowError::Refused(format!(
                    "server `{server}` is gone: the inventory is kept as it is"
                )));
            }
            let inv = Inventory::from_found(&plan.journal, flow::now_unix());
            let file = file
                .clone()
                .unwrap_or_else(|| inventory::default_path(&state_dir));
            inv.save(&file)?;
            if cli.json {
                println!(
                    "{}",
                    pretty(&serde_json::to_value(&inv).unwrap_or_default())
                );
            } else {
                println!(
                    "inventory of {} ({}) saved in {}: {} port(s), {} volume(s), {} floating IP(s)",
                    inv.server.name,
                    inv.server.id,
                    file.display(),
                    inv.ports.len(),
                    inv.volumes.len(),
                    inv.floating_ips.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Recover { target, yes } => {
            if !yes {
                anyhow::bail!(FlowError::Refused(
                    "recover deletes and re-creates the server: run `plan` first, then add --yes"
                        .into()
                ));
            }
            recover(&cli, target).await
        }
        Command::Watch(w) => watch(&cli, w).await,
        Command::Resume => {
            let _lock = journal::lock_state_dir(&state_dir)?;
            let j = Journal::load(&path)?.ok_or_else(|| {
                FlowError::Refused(format!(
                    "no recovery journal in {}: nothing to resume",
                    state_dir.display()
                ))
            })?;
            if j.finished {
                print_report(&j, cli.json);
                return Ok(ExitCode::SUCCESS);
            }
            let cloud = connect(
                &cli,
                j.os_cloud.clone().as_deref().or(cli.os_cloud.as_deref()),
            )?;
            run(&cli, &cloud, j, path, state_dir.clone()).await
        }
    }
}

/// `recover --yes`: the one rebuild path (also the watcher's).
async fn recover(cli: &Cli, target: &Target) -> anyhow::Result<ExitCode> {
    let state_dir = state_dir(cli);
    let path = state_dir.join(JOURNAL_FILE);
    let _lock = journal::lock_state_dir(&state_dir)?;
    if let Some(old) = Journal::load(&path)? {
        if !old.finished {
            anyhow::bail!(FlowError::Refused(format!(
                "{}: recovery {} of {} is unfinished: run `cfy-recover resume` (or `status`)",
                path.display(),
                old.run_id,
                old.old_server.name
            )));
        }
        let done = state_dir.join(format!("journal-{}.json", old.run_id));
        std::fs::rename(&path, &done).with_context(|| format!("archiving {}", path.display()))?;
    }
    let cloud = connect(cli, cli.os_cloud.as_deref())?;
    let plan = flow::inspect(&cloud, &options(cli, target)).await?;
    if !cli.json {
        print_plan(&plan, false);
    }
    plan.journal.save(&path)?;
    run(cli, &cloud, plan.journal, path, state_dir.clone()).await
}

fn watch_options(w: &WatchArgs) -> WatchOptions {
    WatchOptions {
        inventory: w.inventory.clone(),
        interval: w.interval,
        policy: WatchPolicy {
            failures: w.failures,
            cooldown: w.cooldown,
        },
        lease_ttl: w.lease_ttl.unwrap_or(w.interval * 3),
        owner: w.owner.clone().unwrap_or_else(default_owner),
        manager_port: w.manager_port,
        probe_timeout: w.probe_timeout,
        metrics_file: w.metrics_file.clone(),
        max_recoveries: w.max_recoveries,
    }
}

fn default_owner() -> String {
    // HOSTNAME is the pod's name under Kubernetes; the kernel's otherwise.
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    format!("{host}:{}", std::process::id())
}

/// The recovery the watcher starts: `recover --inventory FILE --yes` for the server the
/// inventory names now.
fn watch_target(w: &WatchArgs) -> anyhow::Result<Target> {
    let inv = Inventory::load(&w.inventory)?;
    Ok(Target {
        server: inv.server.id,
        snapshot: None,
        take_snapshot: false,
        no_snapshot: false,
        remote_snapshots: w.remote_snapshots.clone(),
        accept_new_ip: false,
        manager_url: None,
        manager_port: w.manager_port,
        manager_address: w.manager_address,
        manager_token_file: w.manager_token_file.clone(),
        ready_timeout: w.ready_timeout,
        floating_ip: None,
        user_data: None,
        inventory: Some(w.inventory.clone()),
    })
}

async fn watch(cli: &Cli, w: &WatchArgs) -> anyhow::Result<ExitCode> {
    let cloud = connect(cli, cli.os_cloud.as_deref())?;
    let recover_once = || async move {
        let target = watch_target(w).map_err(|e| format!("{e:#}"))?;
        match recover(cli, &target).await {
            Ok(code) if code == ExitCode::SUCCESS => Ok(()),
            Ok(_) => Err("the recovery stopped (see its report; `cfy-recover resume`)".into()),
            Err(e) => Err(format!("{e:#}")),
        }
    };
    crate::watch::run(&cloud, &watch_options(w), recover_once).await?;
    Ok(ExitCode::SUCCESS)
}

async fn run(
    cli: &Cli,
    cloud: &Cloud,
    journal: Journal,
    path: PathBuf,
    state_dir: PathBuf,
) -> anyhow::Result<ExitCode> {
    let mut runner = Runner {
        cloud,
        journal,
        path: path.clone(),
        state_dir,
        waits: waits(cli),
        slack: Default::default(),
    };
    let result = runner.run().await;
    print_report(&runner.journal, cli.json);
    match result {
        Ok(()) => {
            refresh_inventory(&runner.journal, &runner.state_dir);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "cfy-recover: {e}\ncfy-recover: the journal {} records where it stopped; fix the cause and run `cfy-recover resume`",
                path.display()
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// After a finished recovery the inventory names the new server (the state directory's,
/// and `--inventory FILE`'s). A failure here is reported, the recovery itself is done.
fn refresh_inventory(j: &Journal, state_dir: &std::path::Path) {
    let Some(inv) = Inventory::after_recovery(j, flow::now_unix()) else {
        return;
    };
    let mut files = vec![inventory::default_path(state_dir)];
    files.extend(j.inventory_file.clone());
    for f in files {
        match inv.save(&f) {
            Ok(()) => tracing::info!(file = %f.display(), "inventory refreshed"),
            Err(e) => eprintln!("cfy-recover: warning: {e}"),
        }
    }
}

/// The journal as JSON for output, user data (which may hold secrets) reduced to its size.
fn redacted(j: &Journal) -> serde_json::Value {
    let mut v = serde_json::to_value(j).unwrap_or_default();
    if let Some(u) = j.spec.user_data.as_ref() {
        v["spec"]["user_data"] = format!("<redacted: {} bytes of base64>", u.len()).into();
    }
    v
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn print_report(j: &Journal, json: bool) {
    if json {
        println!("{}", pretty(&redacted(j)));
    } else {
        print!("{}", flow::report(j));
    }
}

fn print_plan(plan: &flow::Plan, json: bool) {
    if json {
        let mut v = serde_json::to_value(plan).unwrap_or_default();
        v["journal"] = redacted(&plan.journal);
        println!("{}", pretty(&v));
        return;
    }
    let j = &plan.journal;
    println!(
        "server {} ({}): {}, host {}",
        j.old_server.name,
        j.old_server.id,
        j.old_server.status,
        j.old_server.host_status.as_deref().unwrap_or("unknown")
    );
    for p in &j.ports {
        let ips: Vec<&str> = p.fixed_ips.iter().map(|f| f.ip_address.as_str()).collect();
        println!(
            "  port {} {} ({})",
            p.id,
            ips.join(","),
            if p.nova_created {
                "created by Nova: dies with the server"
            } else {
                "pre-created: survives"
            }
        );
    }
    for v in &j.volumes {
        println!("  volume {} {}", v.id, v.device.as_deref().unwrap_or(""));
    }
    for f in &j.floating_ips {
        println!("  floating IP {} on port {}", f.address, f.port_id);
    }
    println!(
        "  manager {} ({})",
        j.manager.url,
        if plan.manager_answers {
            "answers"
        } else {
            "does not answer"
        }
    );
    for w in &plan.warnings {
        println!("warning: {w}");
    }
    println!("plan:");
    for (i, a) in plan.actions.iter().enumerate() {
        println!("  {}. {a}", i + 1);
    }
}
