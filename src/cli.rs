//! Command-line interface: parses arguments, loads the config and dispatches to the
//! library. The only place besides `main.rs` that uses `anyhow`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{Config, Context, Root, DEFAULT_CONFIG_PATH};
use crate::logging::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "cfy-init",
    version,
    about = "PID 1 init and supervisor for the Cloudify Manager container"
)]
pub struct Cli {
    /// Config file layered over the embedded default (else /etc/cfy-init/config.yaml if present).
    #[arg(long, global = true, env = "CFY_INIT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory that stands for `/` for every path cfy-init touches (for tests and sandboxes).
    #[arg(long, global = true, env = "CFY_INIT_ROOT", default_value = "/")]
    pub root: PathBuf,
    /// Log format (overrides `log.format`).
    #[arg(long, global = true, env = "CFY_INIT_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot: persist, secret, patch, then supervise (the default). With `-- CMD ARGS...`,
    /// supervise just CMD and exit with its status.
    Run {
        #[command(flatten)]
        flags: crate::pid1::foreground::RunFlags,
        #[arg(last = true)]
        main: Vec<String>,
    },
    /// Only seed / adopt the persistent store and link into it (for init containers).
    Persist,
    /// Only restore the service-account credentials mount.
    Secret,
    /// Only patch Cloudify's config.yaml.
    Patch,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Show the running init's status (via the control socket).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when the running init is ready, 1 otherwise (for exec probes).
    Ready,
    /// Manage snapshots of the persistent store.
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
    /// Restore the store from an archive file, a snapshot id, or a copy in Swift
    /// (`swift://CONTAINER/OBJECT`, downloaded and checked first).
    Restore { source: String },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a config file (default: the one that would be used).
    Check { file: Option<PathBuf> },
    /// Print the effective config, secrets redacted.
    Show,
    /// Print the embedded default config.
    Default,
    /// Print the JSON schema of the config.
    Schema,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Take a snapshot now.
    Create {
        /// Then copy it to Swift (`snapshot.remote`), from this process.
        #[arg(long)]
        upload: bool,
    },
    /// List snapshots.
    List {
        /// Print the list as JSON (GET /snapshots), sizes in bytes.
        #[arg(long)]
        json: bool,
        /// List the copies in Swift (`snapshot.remote`) instead.
        #[arg(long)]
        remote: bool,
    },
    /// Copy local snapshot ID to Swift (`snapshot.remote`); resumes an interrupted upload.
    Upload {
        id: String,
        /// Print the result as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Download a snapshot archive to FILE.
    Download { id: String, file: PathBuf },
    /// Delete a snapshot.
    Delete { id: String },
}

/// The config file to use: `--config` / `CFY_INIT_CONFIG`, else the default path if present.
fn config_file(cli: &Cli, root: &Root) -> Option<PathBuf> {
    cli.config.clone().or_else(|| {
        let p = root.path(std::path::Path::new(DEFAULT_CONFIG_PATH));
        p.exists().then_some(p)
    })
}

pub fn main() -> ExitCode {
    crate::process::init();
    if let Some(code) = crate::pid1::compat::main_if_alias() {
        return code;
    }
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the chain of causes joined, no backtrace.
            eprintln!("cfy-init: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    if matches!(cli.command, None | Some(Command::Run { .. })) {
        // Before any thread exists, so that every thread inherits the mask.
        crate::pid1::signals::block_all();
    }
    let root = Root::new(&cli.root);
    if let Some(Command::Config { cmd }) = &cli.command {
        return config_command(cmd, &cli, &root);
    }
    let file = config_file(&cli, &root);
    if matches!(
        cli.command,
        Some(
            Command::Status { .. }
                | Command::Ready
                | Command::Snapshot { .. }
                | Command::Restore { .. }
        )
    ) {
        return client_command(cli, &root, file);
    }
    let config = Config::load(file.as_deref(), &root)?;
    let ring = (config.supervisord.enabled).then_some(config.supervisord.main_log_bytes);
    logging::init(
        cli.log_format.unwrap_or(config.log.format),
        &config.log.level,
        ring,
    );
    let ctx = Context {
        config,
        root,
        config_path: file,
    };
    let run = || Command::Run {
        flags: Default::default(),
        main: Vec::new(),
    };
    match cli.command.unwrap_or_else(run) {
        Command::Run { flags, main } => crate::boot::run(ctx, main, &flags),
        Command::Persist => crate::boot::step_persist(&ctx).map(|_| ExitCode::SUCCESS),
        Command::Secret => crate::boot::step_secret(&ctx).map(|_| ExitCode::SUCCESS),
        Command::Patch => crate::boot::step_patch(&ctx).map(|_| ExitCode::SUCCESS),
        Command::Config { .. }
        | Command::Status { .. }
        | Command::Ready
        | Command::Snapshot { .. }
        | Command::Restore { .. } => unreachable!("handled above"),
    }
}

/// `status`, `ready`, `snapshot`, `restore`: ask the running init, found through its
/// runtime file; the config file is read only when that does not lead to it.
fn client_command(cli: Cli, root: &Root, file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use crate::hooks::client;
    logging::init(cli.log_format.unwrap_or_default(), "warn", None);
    let socket = client::control_socket(root, || Config::load(file.as_deref(), root))?;
    // Swift copies need `snapshot.remote`: only those commands read the config file.
    let remote_ctx = || -> anyhow::Result<Context> {
        Ok(Context {
            config: Config::load(file.as_deref(), root)?,
            root: root.clone(),
            config_path: file.clone(),
        })
    };
    match cli.command.expect("a client command") {
        Command::Status { json } => client::status(&socket, json),
        Command::Ready => client::ready(&socket),
        Command::Snapshot { cmd } => client::snapshot(&socket, cmd, &remote_ctx),
        Command::Restore { source } => client::restore(&socket, &source, &remote_ctx),
        _ => unreachable!("only client commands come here"),
    }
}

fn config_command(cmd: &ConfigCmd, cli: &Cli, root: &Root) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCmd::Check { file } => {
            let file = file.clone().or_else(|| config_file(cli, root));
            Config::load(file.as_deref(), root)?;
            let what = file
                .map(|f| f.display().to_string())
                .unwrap_or("embedded default".into());
            println!("{what}: ok");
        }
        ConfigCmd::Show => {
            let config = Config::load(config_file(cli, root).as_deref(), root)?;
            print!("{}", config.to_yaml_redacted());
        }
        ConfigCmd::Default => print!("{}", crate::config::default_yaml()),
        ConfigCmd::Schema => {
            let schema = schemars::schema_for!(Config);
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).context("schema")?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
